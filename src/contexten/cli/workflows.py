"""``contexten workflows``: list, show, cancel and redrive workflow instances."""

from __future__ import annotations

import click

from contexten.cli._common import audit, echo_json, fail, run_async, store_option, with_store
from contexten.exceptions import WorkflowNotFound
from contexten.store import EventStore
from contexten.workflows import (
    WorkflowInfo,
    WorkflowStatus,
    get_workflow_info,
    list_workflows,
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
            step = info.current_step or "-"
            click.echo(f"{info.workflow_id:40} {info.name:24} {info.status!s:12} {step}")
    if not as_json and not infos:
        click.echo("no workflow instances", err=True)


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
