"""``contexten projections``: list read models, show their lag, rebuild one."""

from __future__ import annotations

import sys

import click

from contexten.cli._common import echo_json, fail, run_async, store_option, with_store
from contexten.exceptions import ProjectionNotFound
from contexten.projections import Projections, ProjectionStatus, create_read_models
from contexten.projections.read_side import builtin_projections
from contexten.store import EventStore

__all__ = ["projections"]

_APP_HELP = "Also the projections this app registers (module:app or path.py:app)."


def _registry(store: EventStore, app_ref: str | None) -> Projections:
    registry = Projections(store, create_read_models(store))
    if app_ref:
        from contexten.ingress.loader import load_app

        app = load_app(app_ref)
        for name in app.projections.names:
            registry.add(app.projections.runner(name).projection)
    else:
        for projection in builtin_projections():
            registry.add(projection)
    return registry


@click.group()
def projections() -> None:
    """Read models (CQRS): folded from the log, checkpointed, rebuildable."""


def _print(statuses: list[ProjectionStatus], as_json: bool) -> None:
    for s in statuses:
        if as_json:
            echo_json(s.to_dict())
        else:
            stale = " STALE (rebuild)" if s.stale else ""
            click.echo(f"{s.name:20} position={s.position:<10} lag={s.lag:<8} v{s.version}{stale}")


@projections.command("list")
@store_option
@click.option("--app", "app_ref", default=None, help=_APP_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_projections(store_url: str | None, app_ref: str | None, as_json: bool) -> None:
    """List the projections with their position and lag."""

    async def body(store: EventStore) -> list[ProjectionStatus]:
        registry = _registry(store, app_ref)
        await registry.open()
        try:
            return await registry.status()
        finally:
            await registry.close()

    _print(await with_store(store_url, body), as_json)


@projections.command("status")
@store_option
@click.option("--app", "app_ref", default=None, help=_APP_HELP)
@click.argument("name")
@run_async
async def status(store_url: str | None, app_ref: str | None, name: str) -> None:
    """Show one projection's position, lag and version, as JSON."""

    async def body(store: EventStore) -> ProjectionStatus:
        registry = _registry(store, app_ref)
        await registry.open()
        try:
            return await registry.runner(name).status()
        finally:
            await registry.close()

    try:
        echo_json((await with_store(store_url, body)).to_dict())
    except ProjectionNotFound as e:
        fail(str(e))


@projections.command("rebuild")
@store_option
@click.option("--app", "app_ref", default=None, help=_APP_HELP)
@click.argument("name")
@run_async
async def rebuild(store_url: str | None, app_ref: str | None, name: str) -> None:
    """Rebuild a projection from the whole log, with a progress bar.

    Safe while the app serves: the new rows go to shadow tables that replace the live ones
    in one transaction at the end; the app's own runner then carries on from there.
    """

    async def body(store: EventStore) -> int:
        registry = _registry(store, app_ref)
        await registry.open()
        try:
            runner = registry.runner(name)
            head = max(await store.head(), 1)
            with click.progressbar(length=head, label=f"rebuilding {name}", file=sys.stderr) as bar:
                done = 0

                def progress(position: int, target: int) -> None:
                    nonlocal done
                    step = min(position, head) - done
                    if step > 0:
                        bar.update(step)
                        done += step

                return await runner.rebuild(progress=progress)
        finally:
            await registry.close()

    try:
        position = await with_store(store_url, body)
    except ProjectionNotFound as e:
        fail(str(e))
    click.echo(f"rebuilt {name} up to position {position}")
