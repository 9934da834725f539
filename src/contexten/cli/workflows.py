"""``contexten workflows``: list, show, cancel, redrive and migrate workflow instances."""

from __future__ import annotations

from datetime import datetime
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
from contexten.cli._time import TIME, TIME_HELP
from contexten.exceptions import MigrationRefused, WorkflowNotFound
from contexten.ingress.loader import load_app
from contexten.projections.read_side import Page, open_read_side
from contexten.store import EventStore
from contexten.workflows import (
    WorkflowEngine,
    WorkflowInfo,
    WorkflowStatus,
    get_workflow_info,
    request_cancel,
    request_redrive,
)
from contexten.workflows.admin import load_state
from contexten.workflows.migration import MigrationPlan

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

    async def body(store: EventStore) -> tuple[Page, dict[tuple[str, str], int]]:
        async with open_read_side(store) as read:
            page = await read.workflows(status=status, name=name, cursor=cursor, limit=limit)
            versions = await read.workflow_versions() if not as_json else []
            return page, {(v["name"], v["version"]): v["in_flight"] for v in versions}

    try:
        page, in_flight = await with_store(store_url, body)
    except ValueError as e:
        fail(str(e))
    for row in page.items:
        if as_json:
            echo_json(row)
        else:
            step = clean(row["current_step"] or "-")
            if row["status"] == WorkflowStatus.BLOCKED.value:
                step = f"{clean(row['blocked_reason'] or '')}: {step}"
            click.echo(
                f"{clean(row['workflow_id']):40} {clean(row['name']):24} "
                f"v{clean(row['version']):<4} #{row['run']:<3} {row['status']:12} {step}"
            )
    if not as_json and not page.items:
        click.echo("no workflow instances", err=True)
    if not as_json and page.items and cursor is None:
        for (wf_name, version), count in sorted(in_flight.items()):
            click.echo(f"in flight: {wf_name} v{version}: {count}", err=True)
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
@click.option(
    "--force",
    is_flag=True,
    help="Supersede recorded calls that already made effects (they are not undone).",
)
@click.option("--dry-run", is_flag=True, help="Show the plan; record nothing.")
@click.option("--json", "as_json", is_flag=True, help="The plan as one JSON object.")
@run_async
async def migrate(
    store_url: str | None,
    reference: str,
    workflow_id: str,
    to_version: str,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Move a blocked instance to another registered version, resuming from its last
    compatible point.

    Its history is replayed against that version's code first: the calls the new code
    makes as recorded are kept (they never run again) and it resumes at the next one; the
    recorded calls after that are superseded (kept in the history, no longer replayed).
    When those already made effects (a completed step, an emitted event...), the move is
    refused (exit 1, nothing recorded) and they are listed; --force moves it anyway, and
    they are neither undone nor compensated. The running workers resume it.
    """
    app = load_app(reference, cwd=Path.cwd())

    async def body(store: EventStore) -> MigrationPlan:
        state = await load_state(store, workflow_id)
        if state is None:
            fail(f"no workflow instance {workflow_id!r}")
        engine = WorkflowEngine(store, default_retry=app.workflows.default_retry)
        for versions in (app.workflows.versions(n) for n in app.workflows.definitions):
            for definition in versions.values():
                engine.register(definition.fn, name=definition.name, version=definition.version)
        if dry_run:
            return await engine.plan_migration(workflow_id, to_version)
        try:
            plan = await engine.migrate(workflow_id, to_version, force=force)
        except MigrationRefused as e:
            await audit(store, "workflows:migrate", target=workflow_id, outcome="refused")
            for line in e.effects:
                click.echo(f"already performed: {clean(line)}", err=True)
            raise
        detail = f"version {plan.from_version or '?'} -> {plan.to_version}, point {plan.point}"
        if plan.effects:
            detail += f", forced over {len(plan.effects)} effect(s)"
        await audit(
            store, "workflows:migrate", target=workflow_id, outcome="migrated", detail=detail
        )
        return plan

    plan = await with_store(store_url, body)
    if as_json:
        echo_json({**plan.to_dict(), "migrated": not dry_run})
        return
    verb = "would migrate" if dry_run else "migrated"
    click.echo(
        f"{verb}: {clean(workflow_id)} from version {clean(plan.from_version or '?')} to "
        f"{clean(plan.to_version)}; resumes at call #{plan.resumes_at} "
        f"({plan.point} of {plan.recorded_calls} recorded call(s) kept)"
    )
    if plan.divergence:
        click.echo(f"  diverges: {clean(plan.divergence)}")
    for call in plan.superseded:
        click.echo(f"  superseded: {clean(call.describe())}")
    for call in plan.effects:
        click.echo(f"  already performed (not undone): {clean(call.describe())}: {call.effect}")


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
