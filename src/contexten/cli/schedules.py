"""``contexten schedules``: list, pause, resume, trigger and backfill durable schedules.

These write requests into a schedule's stream; the workers running the App carry them out
at their next poll (a second or so). Nothing here needs the App's code.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from contexten.cli._common import (
    audit,
    clean,
    echo_json,
    run_async,
    store_option,
    with_store,
)
from contexten.cli.replay import parse_since
from contexten.store import EventStore
from contexten.workflows.schedules import (
    SCHEDULE_PREFIX,
    ScheduleState,
    fold_schedule,
    request_backfill,
    request_pause,
    request_trigger,
)

__all__ = ["schedules"]


@click.group()
def schedules() -> None:
    """Durable schedules (one run per tick across all workers)."""


@schedules.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_schedules(store_url: str | None, as_json: bool) -> None:
    """Every schedule that has run on the store: paused or not, last tick, counts."""

    async def body(store: EventStore) -> list[tuple[str, ScheduleState]]:
        found = await store.list_streams(SCHEDULE_PREFIX, limit=10**6)
        return [
            (
                s.stream.removeprefix(SCHEDULE_PREFIX),
                fold_schedule(await store.read_stream(s.stream)),
            )
            for s in found
        ]

    rows = await with_store(store_url, body)
    for name, state in rows:
        last = state.last_tick.isoformat() if state.last_tick else None
        if as_json:
            echo_json(
                {
                    "name": name,
                    "paused": state.paused,
                    "last_tick": last,
                    "last_run": state.last_run,
                    "ticked": state.ticked,
                    "skipped": state.skipped,
                    "missed": state.missed,
                    "pending_triggers": len(state.triggers),
                    "pending_backfills": len(state.backfills),
                }
            )
        else:
            status = "paused" if state.paused else "active"
            click.echo(
                f"{name:32} {status:7} last tick {last or '-':26} ran {state.ticked} "
                f"skipped {state.skipped} missed {state.missed}"
            )
    if not as_json and not rows:
        click.echo("no schedules", err=True)


async def _set_paused(store_url: str | None, name: str, *, paused: bool) -> None:
    """Request the pause (or resume) and record it as the operator's audit event."""
    action = "schedules:pause" if paused else "schedules:resume"

    async def body(store: EventStore) -> None:
        await request_pause(store, name, paused=paused, at=datetime.now(UTC))
        await audit(store, action, target=name, outcome="requested")

    await with_store(store_url, body)
    click.echo(f"{'paused' if paused else 'resumed'}: {clean(name)}")


@schedules.command("pause")
@store_option
@click.argument("name")
@run_async
async def pause(store_url: str | None, name: str) -> None:
    """Stop a schedule firing (ticks while paused never run)."""
    await _set_paused(store_url, name, paused=True)


@schedules.command("resume")
@store_option
@click.argument("name")
@run_async
async def resume(store_url: str | None, name: str) -> None:
    """Let a paused schedule fire again, from its next tick."""
    await _set_paused(store_url, name, paused=False)


@schedules.command("trigger")
@store_option
@click.argument("name")
@run_async
async def trigger(store_url: str | None, name: str) -> None:
    """Start one run now (paused or not)."""

    async def body(store: EventStore) -> str:
        request = await request_trigger(store, name)
        await audit(store, "schedules:trigger", target=name, outcome=f"requested {request}")
        return request

    request = await with_store(store_url, body)
    click.echo(f"triggered: sched:{name}:manual:{request}")


@schedules.command("backfill")
@store_option
@click.argument("name")
@click.option("--from", "start", required=True, help="ISO time, or a duration ago (7d, 12h).")
@click.option("--to", "end", default=None, help="ISO time or duration ago (default: now).")
@run_async
async def backfill(store_url: str | None, name: str, start: str, end: str | None) -> None:
    """Run every tick in [--from, --to] that has no run yet (at most 1,000)."""
    now = datetime.now(UTC)
    first, last = parse_since(start, now), parse_since(end, now) if end else now

    async def body(store: EventStore) -> str:
        request = await request_backfill(store, name, first, last)
        span = f"{first.isoformat()} .. {last.isoformat()}"
        await audit(store, "schedules:backfill", target=name, outcome="requested", detail=span)
        return request

    request = await with_store(store_url, body)
    click.echo(f"backfill requested: {name} {first.isoformat()} .. {last.isoformat()} ({request})")
