"""Read models as tables in a SQLite file beside the store's (``contexten.db`` →
``contexten.read.db``, see :func:`read_models_path`).

A file of their own, because SQLite has one write lock per file: in the store's file every
read-model transaction held the lock the event writer needs, and a writer that meets a held
lock sleeps in the busy handler's steps (1, 2, 5, 10 ms...), which showed as the p99 of
every acknowledged write. Read models are rebuilt from the log, so their file commits at
``synchronous=NORMAL`` (WAL): each commit is atomic with its checkpoint, and a power cut can
only take back the last few, which are folded again.

One connection, used by one thread at a time (a single-thread executor), in autocommit mode
with explicit ``BEGIN IMMEDIATE`` transactions (several processes sharing a store share this
file too: WAL plus the busy timeout serialise them); point reads run on a second, read-only
connection.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from contexten.exceptions import ProjectionConflict, StoreClosed
from contexten.projections import _sql
from contexten.projections.base import (
    CheckpointState,
    Commit,
    Delete,
    Projection,
    Put,
    Query,
    ReadModels,
    Table,
    Write,
    time_key,
)
from contexten.store._sqlite_schema import connect, switch_to_wal, translate_error
from contexten.store.sqlite import parse_sqlite_url

__all__ = ["SqliteReadModels", "decode_value", "encode_value", "read_models_path"]

T = TypeVar("T")
_JSON = msgspec.json.Encoder()
_CP = _sql.CHECKPOINTS


def read_models_path(store_path: str) -> str:
    """The read models' file for the SQLite store at ``store_path``: ``.read`` before its
    extension (``/data/contexten.db`` → ``/data/contexten.read.db``)."""
    root, ext = os.path.splitext(store_path)
    return f"{root}.read{ext}" if ext else f"{store_path}.read"


def encode_value(table: Table, column: str, value: Any) -> Any:
    """A Python value as SQLite stores it in ``table.column``."""
    if value is None:
        return None
    kind = table.columns[column]
    if kind == "time":
        return time_key(value) if isinstance(value, datetime) else str(value)
    if kind == "json":
        return _JSON.encode(value).decode()
    if kind == "bool":
        return int(bool(value))
    return value


def _time_text(value: Any) -> str:
    return time_key(value) if isinstance(value, datetime) else str(value)


_ENCODERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "time": _time_text,
    "json": lambda value: _JSON.encode(value).decode(),
    "bool": lambda value: int(bool(value)),
}


def _row_encoder(table: Table) -> Callable[[Mapping[str, Any]], list[Any]]:
    """A function giving a checked row's values as :func:`encode_value` would, in column
    order (built once per table: the per-column type lookups are done here)."""
    columns = tuple((name, _ENCODERS.get(kind)) for name, kind in table.columns.items())

    def encode(row: Mapping[str, Any]) -> list[Any]:
        return [
            v if (v := row[name]) is None or convert is None else convert(v)
            for name, convert in columns
        ]

    return encode


def decode_value(kind: str, value: Any) -> Any:
    """A stored SQLite value back as Python."""
    if value is None:
        return None
    if kind == "time":
        return datetime.fromisoformat(value)
    if kind == "json":
        return msgspec.json.decode(value)
    if kind == "bool":
        return bool(value)
    return value


def _row(table: Table, values: Sequence[Any]) -> dict[str, Any]:
    return {
        c: decode_value(kind, v) for (c, kind), v in zip(table.columns.items(), values, strict=True)
    }


class SqliteReadModels(ReadModels):
    """Read models beside the SQLite store named by a ``sqlite:///`` URL (the store's URL),
    in the file :func:`read_models_path` names."""

    def __init__(self, url: str) -> None:
        self.url = url
        store_path, options = parse_sqlite_url(url)
        self.path = read_models_path(store_path)
        self.busy_timeout = float(options.get("busy_timeout", 30.0))
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._plans: dict[tuple[str, bool], _sql.TablePlan] = {}
        self._encoders: dict[str, Callable[[Mapping[str, Any]], list[Any]]] = {}

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise StoreClosed(f"the read models of {self.path!r} are not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn, conn)
        except sqlite3.Error as e:
            raise translate_error(e, self.path, "using the read models") from e

    async def open(self) -> None:
        """Connect and create the checkpoint table."""
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="contexten-read-models")
        loop = asyncio.get_running_loop()

        def connect_writer() -> sqlite3.Connection:
            conn = connect(self.path, busy_timeout=self.busy_timeout, durable=False)
            switch_to_wal(conn)
            return conn

        self._conn = await loop.run_in_executor(self._executor, connect_writer)
        # Point reads by key (a projection's ``batch.get``) take microseconds in WAL mode and
        # never wait for a writer: they run inline on their own read-only connection rather
        # than paying a thread hop each.
        self._reader = connect(self.path, busy_timeout=self.busy_timeout, read_only=True)
        await self._run(
            lambda c: c.execute(
                f"CREATE TABLE IF NOT EXISTS {_CP} (name TEXT PRIMARY KEY, "
                "position INTEGER NOT NULL, version INTEGER NOT NULL, updated_at TEXT)"
            )
        )

    async def close(self) -> None:
        """Close the connection."""
        conn, executor, reader = self._conn, self._executor, self._reader
        self._conn = self._executor = self._reader = None
        if reader is not None:
            reader.close()
        if conn is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            executor.shutdown(wait=False)

    def _plan(self, table: Table, shadow: bool) -> _sql.TablePlan:
        key = (table.name, shadow)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = _sql.plan(table, _sql.SQLITE, shadow=shadow)
        return found

    async def ensure(self, projection: Projection) -> None:
        """Create missing tables (with their indexes) and the checkpoint row."""

        def work(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                for table in projection.tables:
                    name = _sql.physical(table, False)
                    exists = c.execute(
                        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)
                    ).fetchone()
                    if not exists:
                        for stmt in self._plan(table, False).create:
                            c.execute(stmt)
                c.execute(
                    f"INSERT INTO {_CP} (name, position, version) VALUES (?, 0, ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    (projection.name, projection.version),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        await self._run(work)

    async def checkpoint(self, name: str, *, shadow: bool = False) -> CheckpointState:
        """The stored checkpoint."""
        key = f"{name}#shadow" if shadow else name
        row = await self._run(
            lambda c: c.execute(
                f"SELECT position, version, updated_at FROM {_CP} WHERE name = ?", (key,)
            ).fetchone()
        )
        if row is None:
            return CheckpointState(name, 0, 0, None)
        updated = datetime.fromisoformat(row[2]) if row[2] else None
        return CheckpointState(name, int(row[0]), int(row[1]), updated)

    def _apply_writes(
        self, c: sqlite3.Connection, projection: Projection, writes: Sequence[Write], shadow: bool
    ) -> None:
        """Apply ``writes`` in order; a run of upserts into one table is one ``executemany``."""
        i, n = 0, len(writes)
        while i < n:
            w = writes[i]
            table = projection.table(w.table)
            plan = self._plan(table, shadow)
            if isinstance(w, Delete):
                c.execute(plan.delete, tuple(w.key))
                i += 1
                continue
            encode = self._encoders.get(table.name)
            if encode is None:
                encode = self._encoders[table.name] = _row_encoder(table)
            rows = [encode(table.check_row(w.row))]
            i += 1
            while i < n and isinstance(after := writes[i], Put) and after.table == w.table:
                rows.append(encode(table.check_row(after.row)))
                i += 1
            c.executemany(plan.upsert, rows)

    def _commit_one(
        self,
        c: sqlite3.Connection,
        projection: Projection,
        writes: Sequence[Write],
        *,
        expected: int,
        position: int,
        shadow: bool,
        now: str,
    ) -> bool:
        """Inside a transaction: the rows and the checkpoint move, if the checkpoint is at
        ``expected`` (True); nothing otherwise (False)."""
        key = f"{projection.name}#shadow" if shadow else projection.name
        row = c.execute(f"SELECT position FROM {_CP} WHERE name = ?", (key,)).fetchone()
        if (int(row[0]) if row is not None else 0) != expected:
            return False
        self._apply_writes(c, projection, writes, shadow)
        c.execute(
            f"INSERT INTO {_CP} (name, position, version, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "position = excluded.position, version = excluded.version, "
            "updated_at = excluded.updated_at",
            (key, position, projection.version, now),
        )
        return True

    async def commit(
        self,
        projection: Projection,
        writes: Sequence[Write],
        *,
        expected: int,
        position: int,
        shadow: bool = False,
    ) -> None:
        """Rows and checkpoint in one ``BEGIN IMMEDIATE`` transaction, if the checkpoint holds."""
        conflicted = await self._commit_all(
            [Commit(projection, writes, expected, position)], shadow=shadow
        )
        if conflicted:
            current = await self.checkpoint(projection.name, shadow=shadow)
            raise ProjectionConflict(
                f"projection {projection.name!r} is at {current.position}, not {expected}"
            )

    async def commit_many(self, commits: Sequence[Commit]) -> set[str]:
        """Every batch in one ``BEGIN IMMEDIATE`` transaction (one thread hop, one commit),
        each conditional on its own checkpoint."""
        return await self._commit_all(commits, shadow=False)

    async def _commit_all(self, commits: Sequence[Commit], *, shadow: bool) -> set[str]:
        now = time_key(datetime.now(UTC))

        def work(c: sqlite3.Connection) -> set[str]:
            conflicted: set[str] = set()
            c.execute("BEGIN IMMEDIATE")
            try:
                for item in commits:
                    if not self._commit_one(
                        c,
                        item.projection,
                        item.writes,
                        expected=item.expected,
                        position=item.position,
                        shadow=shadow,
                        now=now,
                    ):
                        conflicted.add(item.projection.name)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return conflicted

        return await self._run(work)

    async def get(
        self, table: Table, key: tuple[Any, ...], *, shadow: bool = False
    ) -> dict[str, Any] | None:
        """One row by key."""
        plan = self._plan(table, shadow)
        args = [encode_value(table, c, v) for c, v in zip(table.key, key, strict=True)]
        reader = self._reader
        if reader is None:
            raise StoreClosed(f"the read models of {self.path!r} are not open")
        try:
            values = reader.execute(plan.get, args).fetchone()
        except sqlite3.Error as e:
            raise translate_error(e, self.path, "reading the read models") from e
        return _row(table, values) if values is not None else None

    async def query(self, table: Table, query: Query) -> list[dict[str, Any]]:
        """The rows ``query`` selects."""
        sql, args = _sql.select(table, query, _sql.SQLITE, encode_value)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [_row(table, r) for r in rows]

    async def count(self, table: Table, where: Mapping[str, Any] | None = None) -> int:
        """COUNT(*) with equalities."""
        sql, args = _sql.count(table, where or {}, _sql.SQLITE, encode_value)
        return int(await self._run(lambda c: c.execute(sql, args).fetchone()[0]))

    async def start_shadow(self, projection: Projection) -> None:
        """Fresh shadow tables (indexes named for this build) at position 0."""
        generation = uuid.uuid4().hex[:8]

        def work(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                for table in projection.tables:
                    plan = _sql.plan(table, _sql.SQLITE, shadow=True, generation=generation)
                    c.execute(plan.drop)
                    for stmt in plan.create:
                        c.execute(stmt)
                c.execute(
                    f"INSERT INTO {_CP} (name, position, version) VALUES (?, 0, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = 0, version = excluded.version",
                    (f"{projection.name}#shadow", projection.version),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        await self._run(work)

    async def swap(self, projection: Projection) -> int:
        """Drop the live tables, rename the shadows in, move the checkpoint: one transaction."""
        now = time_key(datetime.now(UTC))

        def work(c: sqlite3.Connection) -> int:
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute(
                    f"SELECT position FROM {_CP} WHERE name = ?", (f"{projection.name}#shadow",)
                ).fetchone()
                if row is None:
                    raise ValueError(f"projection {projection.name!r} has no shadow to swap in")
                for table in projection.tables:
                    c.execute(self._plan(table, False).drop)
                    c.execute(_sql.rename(table))
                c.execute(
                    f"UPDATE {_CP} SET position = ?, version = ?, updated_at = ? WHERE name = ?",
                    (int(row[0]), projection.version, now, projection.name),
                )
                c.execute(f"DELETE FROM {_CP} WHERE name = ?", (f"{projection.name}#shadow",))
                c.execute("COMMIT")
                return int(row[0])
            except BaseException:
                c.execute("ROLLBACK")
                raise

        return await self._run(work)
