"""A bounded window of the records a store committed itself, by position.

Durable backends keep the records they just wrote here, so that a consumer tailing the log
in the same process (the dispatcher, the workflow engine) reads the newest events from memory
instead of a database round trip and a JSON decode. The window never pretends to be
complete: a read that does not start inside it, or reaches a position it lacks (an event
another process committed), stops there and the caller falls back to the database.
"""

from __future__ import annotations

from contexten.store.base import RecordedEvent

__all__ = ["RecentLog"]


class RecentLog:
    """Recently committed records, keyed by log position, at most ``capacity`` of them."""

    __slots__ = ("_capacity", "_low", "_records")

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._records: dict[int, RecordedEvent] = {}
        self._low = 0

    def add(self, record: RecordedEvent) -> None:
        """Remember ``record``; the oldest records are forgotten past the capacity."""
        records = self._records
        if not records:
            self._low = record.position
        records[record.position] = record
        while len(records) > self._capacity:
            records.pop(self._low, None)
            self._low += 1

    def read(self, after: int, limit: int) -> list[RecordedEvent] | None:
        """The contiguous records after ``after`` (up to ``limit``), or None if the window
        does not hold position ``after + 1``."""
        records = self._records
        position = after + 1
        first = records.get(position)
        if first is None:
            return None
        out = [first]
        while len(out) < limit:
            position += 1
            record = records.get(position)
            if record is None:
                break
            out.append(record)
        return out

    def replace(self, record: RecordedEvent) -> None:
        """Put ``record`` in place of the one at its position, if that one is held (an
        event rewritten by retention)."""
        if record.position in self._records:
            self._records[record.position] = record

    def clear(self) -> None:
        """Forget everything (the store closed)."""
        self._records.clear()
        self._low = 0
