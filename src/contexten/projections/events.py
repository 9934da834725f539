"""The ``events`` read model: an index of the global log's envelopes, for filtered listings.

The store indexes events only by position, id and stream. Listing "every
``github.pull_request.*`` event of ENG-123 last week" by scanning the log is linear in the
log; this read model keeps one row per event (its envelope's filterable attributes, never its
payload) with an index per filter, each ending in ``position``, so a filtered page is an
index range read whatever the log's size. :mod:`contexten.projections.event_search` runs the
listings; the events themselves are read back from the store by id.

``event_types`` holds every type seen (with a count): a type *pattern* is matched against
it in Python and becomes one indexed read per matching type.
"""

from __future__ import annotations

from typing import Final

from contexten.projections.base import Projection, ProjectionBatch, Table
from contexten.store.base import RecordedEvent

__all__ = ["EVENT_INDEX", "EVENT_TYPES", "EventsProjection"]

EVENT_INDEX: Final = Table(
    "event_index",
    {
        "position": "int",
        "event_id": "text",
        "stream": "text",
        "type": "text",
        "source": "text",
        "subject": "text",
        "correlation_id": "text",
        "causation_id": "text",
        "recorded_at": "time",
    },
    key=("position",),
    indexes=(
        ("type", "position"),
        ("source", "position"),
        ("subject", "position"),
        ("correlation_id", "position"),
        ("causation_id", "position"),
        ("recorded_at",),
    ),
)

EVENT_TYPES: Final = Table(
    "event_types",
    {"type": "text", "n": "int", "last_position": "int"},
    key=("type",),
)


class EventsProjection(Projection):
    """One index row per event of the log, and the set of event types."""

    name = "events"
    tables = (EVENT_INDEX, EVENT_TYPES)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Index the event's envelope and count its type."""
        event = record.event
        batch.put(
            "event_index",
            {
                "position": record.position,
                "event_id": event.id,
                "stream": record.stream,
                "type": event.type,
                "source": event.source,
                "subject": event.subject,
                "correlation_id": event.correlation_id,
                "causation_id": event.causation_id,
                "recorded_at": record.recorded_at,
            },
        )
        # Types are counted here and written once per type and batch, in flush.
        counts: dict[str, list[int]] = batch.scratch.setdefault("types", {})
        seen = counts.get(event.type)
        if seen is None:
            counts[event.type] = [1, record.position]
        else:
            seen[0] += 1
            seen[1] = record.position

    async def flush(self, batch: ProjectionBatch) -> None:
        """Add the batch's count of each type to its row."""
        counts: dict[str, list[int]] = batch.scratch.get("types", {})
        for kind, (n, last) in counts.items():
            seen = await batch.get("event_types", kind)
            batch.put(
                "event_types",
                {"type": kind, "n": (seen["n"] if seen else 0) + n, "last_position": last},
            )
