"""Read models in process memory: the test double, and the partner of the memory store."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from contexten.exceptions import ProjectionConflict
from contexten.projections.base import (
    CheckpointState,
    Delete,
    Projection,
    Query,
    ReadModels,
    Table,
    Write,
    check_query,
    order_columns,
)

__all__ = ["MemoryReadModels"]

_Rows = dict[tuple[Any, ...], dict[str, Any]]


def _sort_value(value: Any) -> tuple[int, Any]:
    # NULLs sort first, as in SQLite; other values compare among themselves.
    return (0, 0) if value is None else (1, value)


class MemoryReadModels(ReadModels):
    """Tables as dicts; a commit is atomic because nothing awaits while it applies."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._tables: dict[str, _Rows] = {}
        self._checkpoints: dict[str, CheckpointState] = {}

    async def open(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release (the rows stay for a reopen in the same process)."""

    @staticmethod
    def _physical(name: str, shadow: bool) -> str:
        return f"{name}__shadow" if shadow else name

    @staticmethod
    def _cp_name(name: str, shadow: bool) -> str:
        return f"{name}#shadow" if shadow else name

    async def ensure(self, projection: Projection) -> None:
        """Create the projection's tables if missing."""
        for table in projection.tables:
            self._tables.setdefault(table.name, {})
        self._checkpoints.setdefault(
            projection.name, CheckpointState(projection.name, 0, projection.version, None)
        )

    async def checkpoint(self, name: str, *, shadow: bool = False) -> CheckpointState:
        """The checkpoint (position 0, version 0 if never written)."""
        key = self._cp_name(name, shadow)
        return self._checkpoints.get(key) or CheckpointState(name, 0, 0, None)

    async def commit(
        self,
        projection: Projection,
        writes: Sequence[Write],
        *,
        expected: int,
        position: int,
        shadow: bool = False,
    ) -> None:
        """Apply ``writes`` and move the checkpoint, or raise ProjectionConflict."""
        key = self._cp_name(projection.name, shadow)
        current = await self.checkpoint(projection.name, shadow=shadow)
        if current.position != expected:
            raise ProjectionConflict(
                f"projection {projection.name!r} is at {current.position}, not {expected}"
            )
        staged: list[tuple[_Rows, tuple[Any, ...], dict[str, Any] | None]] = []
        for w in writes:
            table = projection.table(w.table)
            rows = self._tables.setdefault(self._physical(table.name, shadow), {})
            if isinstance(w, Delete):
                staged.append((rows, tuple(w.key), None))
            else:
                checked = table.check_row(w.row)
                staged.append((rows, table.key_of(checked), copy.deepcopy(checked)))
        for rows, k, new in staged:
            if new is None:
                rows.pop(k, None)
            else:
                rows[k] = new
        self._checkpoints[key] = CheckpointState(
            projection.name, position, projection.version, datetime.now().astimezone()
        )

    async def get(
        self, table: Table, key: tuple[Any, ...], *, shadow: bool = False
    ) -> dict[str, Any] | None:
        """The row with ``key``, or None."""
        row = self._tables.get(self._physical(table.name, shadow), {}).get(tuple(key))
        return copy.deepcopy(row) if row is not None else None

    def _matching(self, table: Table, query: Query) -> list[dict[str, Any]]:
        out = []
        for row in self._tables.get(table.name, {}).values():
            if any(row.get(c) != v for c, v in query.where.items()):
                continue
            if query.prefix is not None:
                value = row.get(query.prefix[0])
                if not isinstance(value, str) or not value.startswith(query.prefix[1]):
                    continue
            if query.since is not None:
                value = row.get(query.since[0])
                if value is None or value < query.since[1]:
                    continue
            if query.until is not None:
                value = row.get(query.until[0])
                if value is None or value >= query.until[1]:
                    continue
            out.append(row)
        return out

    async def query(self, table: Table, query: Query) -> list[dict[str, Any]]:
        """The selected rows, sorted, after the cursor, at most ``limit``."""
        check_query(table, query)
        cols, desc = order_columns(table, query.order)
        rows = self._matching(table, query)

        def sort_key(row: Mapping[str, Any]) -> tuple[tuple[int, Any], ...]:
            return tuple(_sort_value(row.get(c)) for c in cols)

        rows.sort(key=sort_key, reverse=desc)
        if query.after is not None:
            cursor = tuple(_sort_value(v) for v in query.after)
            rows = [r for r in rows if (sort_key(r) < cursor if desc else sort_key(r) > cursor)]
        return [copy.deepcopy(r) for r in rows[: query.limit]]

    async def count(self, table: Table, where: Mapping[str, Any] | None = None) -> int:
        """How many rows match ``where``."""
        return len(self._matching(table, Query(where=where or {})))

    async def start_shadow(self, projection: Projection) -> None:
        """Empty shadow tables at position 0."""
        for table in projection.tables:
            self._tables[self._physical(table.name, True)] = {}
        self._checkpoints[self._cp_name(projection.name, True)] = CheckpointState(
            projection.name, 0, projection.version, None
        )

    async def swap(self, projection: Projection) -> int:
        """Shadow tables and checkpoint become the live ones."""
        for table in projection.tables:
            self._tables[table.name] = self._tables.pop(self._physical(table.name, True), {})
        shadow = self._checkpoints.pop(self._cp_name(projection.name, True))
        self._checkpoints[projection.name] = CheckpointState(
            projection.name, shadow.position, projection.version, datetime.now().astimezone()
        )
        return shadow.position
