"""``contexten workflows``: list, show, cancel and redrive workflow instances."""

from __future__ import annotations

from datetime import datetime

import click

from contexten.cli._common import audit, echo_json, fail, run_async, store_option, with_store
from contexten.cli._time import TIME, TIME_HELP
from contexten.exceptions import WorkflowNotFound
from contexten.projections.read_side import Page, open_read_side
from contexten.store import EventStore
from contexten.workflows import (
    WorkflowInfo,
    WorkflowStatus,
    get_workflow_info,
    request_cancel,
    request_redrive,
)

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
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Page size."
)
@click.option("--cursor", default=None, help="Continue after this page (printed on stderr).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_instances(
    store_url: str | None,
    status: str | None,
    name: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List workflow instances, most recently updated first, one page at a time.

    Reads the ``workflows`` read model (caught up to the log first), so it costs the same
    with ten instances or a hundred thousand.
    """

    async def body(store: EventStore) -> Page:
        async with open_read_side(store) as read:
            return await read.workflows(status=status, name=name, cursor=cursor, limit=limit)

    try:
        page = await with_store(store_url, body)
    except ValueError as e:
        fail(str(e))
    for row in page.items:
        if as_json:
            echo_json(row)
        else:
            step = row["current_step"] or "-"
            click.echo(f"{row['workflow_id']:40} {row['name']:24} {row['status']:12} {step}")
    if not as_json and not page.items:
        click.echo("no workflow instances", err=True)
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@workflows.command("show")
@store_option
@click.argument("workflow_id")
@click.option("--as-of", "as_of", type=TIME, default=None, help=TIME_HELP)
@run_async
async def show(store_url: str | None, workflow_id: str, as_of: datetime | None) -> None:
    """Show one instance with its whole history, as JSON (as it was at ``--as-of``)."""

    async def body(store: EventStore) -> WorkflowInfo:
        return await get_workflow_info(store, workflow_id, as_of=as_of)

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
    click.echo(f"cancel requested: {workflow_id}")


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
        fail(f"workflow {workflow_id} is not failed")
    click.echo(f"redrive requested: {workflow_id}")
