"""The SQLite store's retention: the SQL behind :class:`~contexten.store.retention.PrunableStore`.

The writes run on the writer thread inside its ``BEGIN IMMEDIATE`` transaction (every
process sharing the file is serialised); :func:`vacuum` runs outside any transaction, as
SQLite requires. Times are integer microseconds since the epoch, as in ``events``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from contexten.events.codec import decode_event, encode_event
from contexten.store.base import SYSTEM_STREAM_PREFIX, RecordedEvent
from contexten.store.retention import Candidate, without_data

__all__ = ["candidates", "file_bytes", "prune_data", "prune_dedup", "vacuum"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_IN_CHUNK: Final = 500


def micros(when: datetime) -> int:
    """``when`` (timezone-aware) as integer microseconds since the epoch."""
    if when.tzinfo is None:
        raise ValueError("retention times must be timezone-aware")
    return (when - _EPOCH) // timedelta(microseconds=1)


def prune_dedup(before: datetime, dry_run: bool, conn: sqlite3.Connection, now: float) -> int:
    """Delete (or count) the dedup keys recorded before ``before``."""
    if dry_run:
        row = conn.execute(
            "SELECT count(*) FROM dedup WHERE recorded_at < ?", (micros(before),)
        ).fetchone()
        return int(row[0])
    return conn.execute("DELETE FROM dedup WHERE recorded_at < ?", (micros(before),)).rowcount


def candidates(
    before: datetime, after: int, limit: int, conn: sqlite3.Connection
) -> list[Candidate]:
    """Unpruned events outside system streams recorded before ``before``, after ``after``."""
    rows = conn.execute(
        "SELECT position, stream, type, recorded_at, length(body) FROM events "
        "WHERE position > ? AND recorded_at < ? AND pruned_at IS NULL "
        "AND substr(stream, 1, 1) <> ? ORDER BY position LIMIT ?",
        (after, micros(before), SYSTEM_STREAM_PREFIX, limit),
    ).fetchall()
    return [Candidate(p, s, t, _EPOCH + timedelta(microseconds=r), n) for p, s, t, r, n in rows]


def prune_data(
    positions: Sequence[int],
    marker: Mapping[str, Any],
    at: datetime,
    conn: sqlite3.Connection,
    now: float,
) -> list[RecordedEvent]:
    """Rewrite the unpruned events at ``positions`` without their data; the new records."""
    done: list[RecordedEvent] = []
    wanted = list(positions)
    for i in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT position, stream, version, recorded_at, body FROM events "
            f"WHERE position IN ({marks}) AND pruned_at IS NULL",
            chunk,
        ).fetchall()
        updates = []
        for position, stream, version, recorded, body in rows:
            event = without_data(decode_event(body), marker, len(body))
            updates.append((encode_event(event), micros(at), position))
            recorded_at = _EPOCH + timedelta(microseconds=recorded)
            done.append(RecordedEvent(position, stream, version, recorded_at, event))
        conn.executemany("UPDATE events SET body = ?, pruned_at = ? WHERE position = ?", updates)
    return done


def vacuum(conn: sqlite3.Connection, now: float) -> None:
    """Rewrite the file without its free pages, then truncate the WAL."""
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def file_bytes(path: str) -> int:
    """The size of the database file and its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(path + suffix)
        except FileNotFoundError:
            continue
    return total
