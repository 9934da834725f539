"""``contexten workflows``: list, show, cancel, redrive and migrate workflow instances."""

from __future__ import annotations

from pathlib import Path

import click

from contexten.cli._common import (
    audit,
    clean,
    echo_json,
    fail,
    run_async,
    store_option,
    with_store,
)
from contexten.exceptions import WorkflowNotFound
from contexten.ingress.loader import load_app
from contexten.store import EventStore
from contexten.workflows import (
    TERMINAL_STATUSES,
    WorkflowEngine,
    WorkflowInfo,
    WorkflowStatus,
    get_workflow_info,
    list_workflows,
    request_cancel,
    request_redrive,
)
from contexten.workflows.admin import load_state

__all__ = ["workflows"]


@click.group()
def workflows() -> None:
    """Durable workflow instances."""


@workflows.command("list")
@store_option
@click.option(
    "--status",
    type=click.Choice([s.value for s in WorkflowStatus]),
    default=None,
    help="Only instances in this status.",
)
@click.option("--name", default=None, help="Only instances of this workflow.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_instances(
    store_url: str | None, status: str | None, name: str | None, as_json: bool
) -> None:
    """List workflow instances, in id order."""

    async def body(store: EventStore) -> list[WorkflowInfo]:
        return await list_workflows(store, status, name=name)

    infos = await with_store(store_url, body)
    for info in infos:
        if as_json:
            echo_json(info.to_dict())
        else:
            step = clean(info.current_step or "-")
            if info.status is WorkflowStatus.BLOCKED:
                step = f"{clean(info.blocked_reason or '')}: {step}"
            click.echo(
                f"{clean(info.workflow_id):40} {clean(info.name):24} v{clean(info.version):<4} "
                f"#{info.run:<3} {info.status!s:12} {step}"
            )
    if not as_json and not infos:
        click.echo("no workflow instances", err=True)
    if not as_json and infos:
        for (wf_name, version), count in sorted(in_flight_by_version(infos).items()):
            click.echo(f"in flight: {wf_name} v{version}: {count}", err=True)


def in_flight_by_version(infos: list[WorkflowInfo]) -> dict[tuple[str, str], int]:
    """Open (not ended) instances per (workflow, version): an old version may be deleted
    once its count is zero."""
    counts: dict[tuple[str, str], int] = {}
    for info in infos:
        if info.status not in TERMINAL_STATUSES and info.kind == "function":
            key = (info.name, info.version or "1")
            counts[key] = counts.get(key, 0) + 1
    return counts


@workflows.command("show")
@store_option
@click.argument("workflow_id")
@run_async
async def show(store_url: str | None, workflow_id: str) -> None:
    """Show one instance with its whole history, as JSON."""

    async def body(store: EventStore) -> WorkflowInfo:
        return await get_workflow_info(store, workflow_id)

    echo_json((await with_store(store_url, body)).to_dict(with_history=True))


@workflows.command("cancel")
@store_option
@click.argument("workflow_id")
@click.option("--reason", default="cancelled from the command line", show_default=True)
@run_async
async def cancel(store_url: str | None, workflow_id: str, reason: str) -> None:
    """Cancel an instance: its completed steps are compensated, then it ends cancelled."""

    async def body(store: EventStore) -> bool:
        try:
            done = await request_cancel(store, workflow_id, reason)
        except WorkflowNotFound:
            await audit(store, "workflows:cancel", target=workflow_id, outcome="not found")
            raise
        outcome = "requested" if done else "unchanged"
        await audit(store, "workflows:cancel", target=workflow_id, outcome=outcome, detail=reason)
        return done

    if not await with_store(store_url, body):
        fail(f"workflow {workflow_id} has already ended or is being cancelled")
    click.echo(f"cancel requested: {clean(workflow_id)}")


@workflows.command("redrive")
@store_option
@click.argument("workflow_id")
@run_async
async def redrive(store_url: str | None, workflow_id: str) -> None:
    """Run a failed instance again from where it failed."""

    async def body(store: EventStore) -> bool:
        try:
            done = await request_redrive(store, workflow_id)
        except WorkflowNotFound:
            await audit(store, "workflows:redrive", target=workflow_id, outcome="not found")
            raise
        outcome = "requested" if done else "unchanged"
        await audit(store, "workflows:redrive", target=workflow_id, outcome=outcome)
        return done

    if not await with_store(store_url, body):
        fail(f"workflow {workflow_id} is neither failed nor blocked")
    click.echo(f"redrive requested: {clean(workflow_id)}")


@workflows.command("migrate")
@click.option("--app", "reference", required=True, help="The App: module:attr or file.py:attr.")
@store_option
@click.argument("workflow_id")
@click.option("--to-version", required=True, help="A version of its workflow in --app.")
@run_async
async def migrate(store_url: str | None, reference: str, workflow_id: str, to_version: str) -> None:
    """Move a blocked instance to another registered version and let it resume.

    Its history is replayed against that version's code first; a divergence refuses the
    move (exit 1) and records nothing. The running workers resume it.
    """
    app = load_app(reference, cwd=Path.cwd())

    async def body(store: EventStore) -> None:
        state = await load_state(store, workflow_id)
        if state is None:
            fail(f"no workflow instance {workflow_id!r}")
        engine = WorkflowEngine(store, default_retry=app.workflows.default_retry)
        for versions in (app.workflows.versions(n) for n in app.workflows.definitions):
            for definition in versions.values():
                engine.register(definition.fn, name=definition.name, version=definition.version)
        await engine.migrate_workflow(workflow_id, to_version)
        await audit(store, "workflows:migrate", target=workflow_id, outcome="migrated")

    await with_store(store_url, body)
    click.echo(f"migrated: {clean(workflow_id)} to version {clean(to_version)}")


@workflows.command("fork")
@click.option("--app", "reference", required=True, help="The App: module:attr or file.py:attr.")
@store_option
@click.argument("workflow_id")
@click.option(
    "--cancel-old/--keep-old",
    default=False,
    show_default=True,
    help="Cancel the old instance (compensating what it did) or leave it as it is.",
)
@run_async
async def fork(store_url: str | None, reference: str, workflow_id: str, cancel_old: bool) -> None:
    """Start a new instance from an instance's input, on the newest version, linked to it."""
    app = load_app(reference, cwd=Path.cwd())

    async def body(store: EventStore) -> str:
        engine = WorkflowEngine(store)
        for name, definition in app.workflows.definitions.items():
            engine.register(definition.fn, name=name, version=definition.version)
        forked = (await engine.fork_workflow(workflow_id, cancel_old=cancel_old)).workflow_id
        await audit(store, "workflows:fork", target=workflow_id, outcome=f"forked as {forked}")
        return forked

    forked = await with_store(store_url, body)
    click.echo(f"forked: {clean(workflow_id)} as {clean(forked)}")
