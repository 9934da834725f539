"""``contexten tokens``: create, list and revoke API tokens.

These commands work on the store directly (whoever can open the store is its admin), and
each create or revoke is recorded as an audit event naming the OS user. A new token is
printed once, on stdout alone, so it can be captured (``TOKEN=$(contexten tokens create
...)``); the store keeps only its hash.
"""

from __future__ import annotations

import click

from contexten.cli._common import echo_json, fail, run_async, store_option, with_store
from contexten.exceptions import TokenNotFound
from contexten.security.audit import audit_type, cli_client, cli_principal, record_audit
from contexten.security.roles import Role
from contexten.security.tokens import (
    IssuedToken,
    TokenInfo,
    create_token,
    list_tokens,
    revoke_token,
)
from contexten.store import EventStore

__all__ = ["tokens"]

_MANAGE = audit_type("tokens:manage")


@click.group()
def tokens() -> None:
    """API tokens: who may read (viewer), act (operator) and manage tokens (admin)."""


@tokens.command("create")
@store_option
@click.option(
    "--role",
    type=click.Choice([str(r) for r in Role]),
    required=True,
    help="viewer: read; operator: also redrive, discard, cancel, replay; admin: also tokens.",
)
@click.option("--name", required=True, help="Who or what the token is for (e.g. grafana).")
@run_async
async def create(store_url: str | None, role: str, name: str) -> None:
    """Create a token and print it (once: only its hash is stored)."""
    principal = cli_principal()

    async def body(store: EventStore) -> IssuedToken:
        issued = await create_token(store, name=name, role=role, created_by=principal)
        await record_audit(
            store,
            _MANAGE,
            principal=principal,
            client=cli_client(),
            outcome="created",
            target=issued.info.id,
            detail=f"{issued.info.role} token {issued.info.name!r}",
        )
        return issued

    try:
        issued = await with_store(store_url, body)
    except ValueError as e:
        fail(str(e))
    click.echo(
        f"created {issued.info.role} token {issued.info.id} ({issued.info.name}); "
        "it is shown only now:",
        err=True,
    )
    click.echo(issued.token)


@tokens.command("list")
@store_option
@click.option("--all", "show_all", is_flag=True, help="Also list revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_command(store_url: str | None, show_all: bool, as_json: bool) -> None:
    """List tokens (ids, names, roles; never the tokens themselves)."""

    async def body(store: EventStore) -> list[TokenInfo]:
        return await list_tokens(store, include_revoked=show_all)

    infos = await with_store(store_url, body)
    for info in infos:
        if as_json:
            echo_json(info.to_dict())
        else:
            state = "active" if info.active else f"revoked {info.revoked_at:%Y-%m-%d %H:%M}"
            click.echo(
                f"{info.id}  {info.role!s:8} {info.name:30} "
                f"created {info.created_at:%Y-%m-%d %H:%M} by {info.created_by}  {state}"
            )
    if not as_json and not infos:
        click.echo("no tokens", err=True)


@tokens.command("revoke")
@store_option
@click.argument("token_id")
@run_async
async def revoke(store_url: str | None, token_id: str) -> None:
    """Revoke a token by its id; every server refuses it within about a second."""
    principal = cli_principal()

    async def body(store: EventStore) -> bool:
        try:
            done = await revoke_token(store, token_id, revoked_by=principal)
        except TokenNotFound:
            done = None
        await record_audit(
            store,
            _MANAGE,
            principal=principal,
            client=cli_client(),
            outcome="revoked" if done else ("unknown" if done is None else "unchanged"),
            target=token_id,
            detail="revoke",
        )
        if done is None:
            fail(f"no token with id {token_id!r} (see contexten tokens list)")
        return done

    if not await with_store(store_url, body):
        fail(f"token {token_id} was already revoked")
    click.echo(f"revoked: {token_id}")
