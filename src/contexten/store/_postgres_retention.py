"""The PostgreSQL store's retention: the SQL behind
:class:`~contexten.store.retention.PrunableStore`.

Old rows are rewritten in place under row locks (``FOR UPDATE``): no lock on the log's head,
so commits go on meanwhile. The space freed is reused by later rows once autovacuum (or
:func:`reclaim`'s ``VACUUM FULL``, which locks the tables while it rewrites them) has run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg

from contexten.events.codec import decode_event, encode_event
from contexten.store.base import SYSTEM_STREAM_PREFIX
from contexten.store.retention import Candidate, Pruned, without_data

__all__ = ["RetentionSql"]

_LONG: Final = 3600.0  # seconds a VACUUM FULL may take before the driver gives up


class RetentionSql:
    """Retention statements for the store tables in one schema (``s``: quoted)."""

    def __init__(self, s: str, schema: str) -> None:
        self._schema = schema
        self._s = s

    async def prune_dedup(self, pool: asyncpg.Pool, before: datetime, dry_run: bool) -> int:
        """Delete (or count) the dedup keys recorded before ``before``."""
        if dry_run:
            n = await pool.fetchval(
                f"SELECT count(*) FROM {self._s}.dedup WHERE recorded_at < $1", before
            )
            return int(n)
        status = await pool.execute(f"DELETE FROM {self._s}.dedup WHERE recorded_at < $1", before)
        return int(status.rsplit(" ", 1)[-1])

    async def candidates(
        self, pool: asyncpg.Pool, before: datetime, after: int, limit: int
    ) -> list[Candidate]:
        """Unpruned events outside system streams recorded before ``before``, after ``after``."""
        rows = await pool.fetch(
            "SELECT position, stream, type, recorded_at, octet_length(body) "
            f"FROM {self._s}.events WHERE position > $1 AND recorded_at < $2 "
            "AND pruned_at IS NULL AND left(stream, 1) <> $3 ORDER BY position LIMIT $4",
            after,
            before,
            SYSTEM_STREAM_PREFIX,
            limit,
        )
        return [Candidate(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def prune_data(
        self,
        pool: asyncpg.Pool,
        positions: Sequence[int],
        marker: Mapping[str, Any],
        at: datetime,
    ) -> list[Pruned]:
        """Rewrite the unpruned events at ``positions`` without their data, in one
        transaction; how many."""
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT position, body FROM {self._s}.events "
                "WHERE position = ANY($1::bigint[]) AND pruned_at IS NULL "
                "ORDER BY position FOR UPDATE",
                list(positions),
            )
            if not rows:
                return []
            events = [without_data(decode_event(body), marker, len(body)) for _, body in rows]
            bodies = [encode_event(event) for event in events]
            await conn.execute(
                f"UPDATE {self._s}.events e SET body = u.b, pruned_at = $3 "
                "FROM unnest($1::bigint[], $2::bytea[]) AS u(p, b) WHERE e.position = u.p",
                [r[0] for r in rows],
                bodies,
                at,
            )
            return [Pruned(r[0], e.correlation_id) for r, e in zip(rows, events, strict=True)]

    async def size(self, pool: asyncpg.Pool) -> int:
        """Bytes the store's tables take, indexes and TOAST included."""
        n = await pool.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind = 'r'",
            self._schema,
        )
        return int(n)

    async def reclaim(self, pool: asyncpg.Pool) -> None:
        """``VACUUM FULL`` the events and dedup tables (locks each while it is rewritten)."""
        async with pool.acquire() as conn:
            await conn.execute(f"VACUUM FULL {self._s}.events, {self._s}.dedup", timeout=_LONG)
