"""The SQLite store's cache table (see :mod:`contexten.cache.store`): the SQL.

Writes run on the writer thread inside its transaction (so every process sharing the file is
serialised); ``now`` is the machine's clock in seconds, which every process on it shares.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["clear", "delete", "get", "put"]

_CHUNK = 500  # keys per query, well under SQLite's bound parameters


def get(
    keys: Sequence[str], conn: sqlite3.Connection, now: float
) -> dict[str, tuple[bytes, float | None]]:
    """The live entries among ``keys``: value and seconds left (None: no expiry)."""
    found: dict[str, tuple[bytes, float | None]] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        rows = conn.execute(
            f"SELECT key, value, expires_at FROM cache WHERE key IN ({','.join('?' * len(chunk))})"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (*chunk, now),
        ).fetchall()
        for key, value, expires in rows:
            found[key] = (bytes(value), None if expires is None else expires - now)
    return found


def put(key: str, value: bytes, ttl: float | None, conn: sqlite3.Connection, now: float) -> None:
    """Upsert an entry, and reclaim the expired ones."""
    conn.execute("DELETE FROM cache WHERE expires_at <= ?", (now,))
    conn.execute(
        "INSERT INTO cache (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) "
        "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        (key, value, None if ttl is None else now + ttl),
    )


def delete(key: str, conn: sqlite3.Connection, now: float) -> bool:
    """Remove ``key``; whether it was live."""
    row = conn.execute("DELETE FROM cache WHERE key = ? RETURNING expires_at", (key,)).fetchone()
    return row is not None and (row[0] is None or row[0] > now)


def clear(prefix: str, conn: sqlite3.Connection, now: float) -> int:
    """Remove the keys starting with ``prefix`` (compared literally); the live ones removed."""
    rows = conn.execute(
        "DELETE FROM cache WHERE substr(key, 1, ?) = ? RETURNING expires_at",
        (len(prefix), prefix),
    ).fetchall()
    return sum(1 for (expires,) in rows if expires is None or expires > now)
