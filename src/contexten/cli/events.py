"""``contexten events``: browse the event store."""

from __future__ import annotations

from datetime import datetime

import click
import msgspec

from contexten.cli._common import clean, echo_json, fail, run_async, store_option, with_store
from contexten.cli._time import TIME, TIME_HELP
from contexten.projections.event_search import EventQuery
from contexten.projections.read_side import open_read_side
from contexten.store import EventStore, RecordedEvent
from contexten.store.base import SYSTEM_STREAM_PREFIX
from contexten.store.retention import pruned_marker

__all__ = ["events", "recorded_to_dict"]


def recorded_to_dict(rec: RecordedEvent, *, with_data: bool = True) -> dict[str, object]:
    """The JSON form of a stored event: its envelope plus where the store put it, and
    ``pruned`` (when, by which rule, how many bytes) if retention removed its data."""
    out: dict[str, object] = {
        "position": rec.position,
        "stream": rec.stream,
        "version": rec.version,
        "recorded_at": rec.recorded_at.isoformat(),
    }
    envelope = msgspec.to_builtins(rec.event)
    if not with_data:
        envelope.pop("data", None)
    out.update(envelope)
    marker = pruned_marker(rec.event)
    if marker is not None:
        out["pruned"] = dict(marker)
    return out


@click.group()
def events() -> None:
    """Browse stored events."""


@events.command("list")
@store_option
@click.option("--type", "type_pattern", default=None, help="Type pattern, e.g. 'github.**'.")
@click.option("--source", default=None, help="Only events from this source.")
@click.option("--subject", default=None, help="Only events about this subject.")
@click.option("--correlation-id", "correlation_id", default=None, help="Only this work item's.")
@click.option("--limit", default=50, show_default=True, help="How many events at most.")
@click.option("--system", is_flag=True, help="Include system streams ($wf-..., $dlq-...).")
@click.option("--as-of", "as_of", type=TIME, default=None, help=TIME_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_events(
    store_url: str | None,
    type_pattern: str | None,
    source: str | None,
    subject: str | None,
    correlation_id: str | None,
    limit: int,
    system: bool,
    as_of: datetime | None,
    as_json: bool,
) -> None:
    """List the newest events, newest first (as the log stood at ``--as-of``, if given),
    through the read side's events query (the ``events`` index, caught up first)."""
    query = EventQuery(
        type=type_pattern,
        source=source,
        subject=subject,
        correlation_id=correlation_id,
        as_of=as_of,
        hidden=() if system else (SYSTEM_STREAM_PREFIX,),
    )
    query.predicate()  # a bad pattern fails here, before the store is opened

    async def body(store: EventStore) -> list[RecordedEvent]:
        found: list[RecordedEvent] = []
        before: int | None = None
        async with open_read_side(store) as read:
            while len(found) < limit:
                page = await read.events(query, before=before, limit=min(limit - len(found), 1000))
                found.extend(page.events)
                if page.cursor is None:
                    break
                before = page.cursor
        return found

    for rec in await with_store(store_url, body):
        if as_json:
            echo_json(recorded_to_dict(rec, with_data=False))
        else:
            e = rec.event
            click.echo(
                f"{rec.position:>8}  {rec.recorded_at:%Y-%m-%d %H:%M:%S}  {clean(e.type):40} "
                f"{clean(e.subject or '-'):30} {clean(e.id)}"
                + (" [data pruned]" if pruned_marker(e) is not None else "")
            )


@events.command("show")
@store_option
@click.argument("event_id")
@run_async
async def show_event(store_url: str | None, event_id: str) -> None:
    """Show one event, with its data, as JSON."""

    async def body(store: EventStore) -> RecordedEvent | None:
        return await store.get_event(event_id)

    rec = await with_store(store_url, body)
    if rec is None:
        fail(f"no event with id {event_id}")
    echo_json(recorded_to_dict(rec))
