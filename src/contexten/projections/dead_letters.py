"""The ``dead_letters`` read model: every letter with its status, and exact counts.

One row per letter (``dead_letters``), folded from the ``$dlq-`` streams exactly as
:func:`contexten.bus.dead_letters.fold` does, plus a small ``dead_letter_counts`` table of
letters per (subscription, status), moved in the same batch as the rows, so health and
metrics read an exact count in one short query however many letters there are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from contexten.bus.dead_letters import (
    DEAD_LETTER_STREAM_PREFIX,
    DISCARDED,
    PARKED,
    REDRIVEN,
    RESOLVED,
    DeadLetter,
    DeadLetterStatus,
)
from contexten.projections.base import Projection, ProjectionBatch, Query, Table
from contexten.store.base import RecordedEvent

__all__ = [
    "DEAD_LETTERS",
    "DEAD_LETTER_COUNTS",
    "DeadLettersProjection",
    "letter_from_row",
    "list_page",
]

DEAD_LETTERS: Final = Table(
    "dead_letters",
    {
        "id": "text",
        "subscription": "text",
        "event_id": "text",
        "position": "int",
        "event_type": "text",
        "error_type": "text",
        "error_message": "text",
        "attempts": "int",
        "first_failure_at": "time",
        "last_failure_at": "time",
        "parked_at": "time",
        "status": "text",
        "updated_at": "time",
        "redriven_from": "text",
        "correlation_id": "text",
    },
    key=("id",),
    indexes=(
        ("status", "parked_at", "id"),
        ("subscription", "status", "parked_at", "id"),
        ("parked_at", "id"),
    ),
)

DEAD_LETTER_COUNTS: Final = Table(
    "dead_letter_counts",
    {"subscription": "text", "status": "text", "n": "int"},
    key=("subscription", "status"),
)

_STATUS: Final = {
    REDRIVEN: DeadLetterStatus.REDRIVEN.value,
    DISCARDED: DeadLetterStatus.DISCARDED.value,
    RESOLVED: DeadLetterStatus.RESOLVED.value,
}


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def _bump(batch: ProjectionBatch, subscription: str, status: str, delta: int) -> None:
    row = await batch.get("dead_letter_counts", subscription, status)
    n = (row["n"] if row else 0) + delta
    if n:
        batch.put("dead_letter_counts", {"subscription": subscription, "status": status, "n": n})
    else:
        batch.delete("dead_letter_counts", subscription, status)


class DeadLettersProjection(Projection):
    """Letters by id (open and resolved) and counts per subscription and status."""

    name = "dead_letters"
    tables = (DEAD_LETTERS, DEAD_LETTER_COUNTS)
    patterns = ("contexten.dead_letter.*",)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Add a parked letter, or move a letter's status."""
        if not record.stream.startswith(DEAD_LETTER_STREAM_PREFIX):
            return
        letter_id = record.stream[len(DEAD_LETTER_STREAM_PREFIX) :]
        event = record.event
        if event.type == PARKED:
            if record.version != 1:
                return
            d = event.data
            batch.put(
                "dead_letters",
                {
                    "id": letter_id,
                    "subscription": str(d["subscription"]),
                    "event_id": str(d["event_id"]),
                    "position": int(d["position"]),
                    "event_type": str(d["event_type"]),
                    "error_type": str(d["error_type"]),
                    "error_message": str(d["error_message"]),
                    "attempts": int(d["attempts"]),
                    "first_failure_at": _time(d["first_failure_at"]),
                    "last_failure_at": _time(d["last_failure_at"]),
                    "parked_at": event.time,
                    "status": DeadLetterStatus.PARKED.value,
                    "updated_at": event.time,
                    "redriven_from": d.get("redriven_from"),
                    "correlation_id": event.correlation_id,
                },
            )
            await _bump(batch, str(d["subscription"]), DeadLetterStatus.PARKED.value, 1)
            return
        status = _STATUS.get(event.type)
        row = await batch.get("dead_letters", letter_id)
        if status is None or row is None or row["status"] == status:
            return
        await _bump(batch, row["subscription"], row["status"], -1)
        await _bump(batch, row["subscription"], status, 1)
        batch.put("dead_letters", {**row, "status": status, "updated_at": event.time})


def letter_from_row(row: dict[str, Any]) -> DeadLetter:
    """The :class:`DeadLetter` a row describes."""
    return DeadLetter(
        id=row["id"],
        subscription=row["subscription"],
        event_id=row["event_id"],
        position=row["position"],
        event_type=row["event_type"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        attempts=row["attempts"],
        first_failure_at=row["first_failure_at"],
        last_failure_at=row["last_failure_at"],
        parked_at=row["parked_at"],
        status=DeadLetterStatus(row["status"]),
        updated_at=row["updated_at"],
        redriven_from=row["redriven_from"],
    )


def list_page(
    *,
    subscription: str | None = None,
    status: str | None = DeadLetterStatus.PARKED.value,
    after: list[Any] | None = None,
    limit: int = 100,
) -> Query:
    """The query for a page of letters, oldest first (``after``: the cursor)."""
    where: dict[str, Any] = {}
    if subscription is not None:
        where["subscription"] = subscription
    if status is not None:
        where["status"] = DeadLetterStatus(status).value
    return Query(where=where, order=("parked_at",), after=after, limit=limit)
