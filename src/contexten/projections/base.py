"""The read-model port: projections, their tables, and the backends that keep them.

A *projection* is a named fold of the global log into tables of its own (a read model). Its
progress is a checkpoint kept **beside its rows**: a backend writes a batch's rows and the
new checkpoint in ONE transaction, conditional on the checkpoint the batch started from (a
compare-and-swap, as Marten's async daemon does). So a crash never applies an event twice
or skips one (the tracking-record idea of pyeventsourcing), and two runners of the same
projection (two processes, or a rebuild swapping in new tables) cannot interleave: the loser
gets :class:`~contexten.exceptions.ProjectionConflict`, drops its batch and reads its
checkpoint again.

Tables are declared, not written in SQL, so one projection runs unchanged on every backend
(memory, SQLite, PostgreSQL)::

    WORKFLOWS = Table("wf_rows", {"id": "text", "status": "text", "n": "int"},
                      key=("id",), indexes=(("status",),))

Column types: ``text``, ``int``, ``float``, ``bool``, ``time`` (aware :class:`datetime`,
stored in UTC) and ``json`` (anything msgspec encodes). Rows are plain dicts.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

from contexten.events.patterns import compile_pattern
from contexten.exceptions import ProjectionConflict
from contexten.store.base import RecordedEvent

__all__ = [
    "COLUMN_TYPES",
    "CheckpointState",
    "ColumnType",
    "Commit",
    "Delete",
    "Order",
    "Projection",
    "ProjectionBatch",
    "Put",
    "Query",
    "ReadModels",
    "Table",
    "Write",
    "check_query",
    "order_columns",
    "time_key",
]

ColumnType = Literal["text", "int", "float", "bool", "time", "json"]
"""A column's type; see the module docstring."""

COLUMN_TYPES: Final[frozenset[str]] = frozenset({"text", "int", "float", "bool", "time", "json"})
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_HANDLES_MEMO: Final = 1024
"""Event types a projection remembers whether it handles (see :meth:`Projection.handles`)."""


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"{what} {name!r} must be lower-case letters, digits and underscores, "
            "starting with a letter (at most 41 characters)"
        )


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a read model: columns, primary key and secondary indexes.

    Attributes:
        name: the table's name (unique across every projection of an app).
        columns: column name -> :data:`ColumnType`, in order.
        key: the primary-key columns (rows are put and deleted by key).
        indexes: column tuples to index, for the listings a read model serves.
    """

    name: str
    columns: Mapping[str, ColumnType]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    time_columns: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The columns of type ``time`` (derived)."""
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        times = tuple(c for c, kind in self.columns.items() if kind == "time")
        object.__setattr__(self, "time_columns", times)
        object.__setattr__(self, "_names", tuple(self.columns))
        _check_name("table name", self.name)
        if not self.columns:
            raise ValueError(f"table {self.name!r} has no columns")
        for column, kind in self.columns.items():
            _check_name("column name", column)
            if kind not in COLUMN_TYPES:
                raise ValueError(f"column {self.name}.{column}: unknown type {kind!r}")
        if not self.key:
            raise ValueError(f"table {self.name!r} needs a key")
        for columns in (self.key, *self.indexes):
            for column in columns:
                if column not in self.columns:
                    raise ValueError(f"table {self.name!r} has no column {column!r}")

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The primary key of ``row``."""
        return tuple(row[c] for c in self.key)

    def check_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with every column present (missing ones None), or ValueError."""
        columns = self.columns
        if tuple(row) == self._names:  # every column, in order: the usual row
            out = dict(row)
        else:
            if len(row) > len(columns) or not columns.keys() >= row.keys():
                unknown = set(row) - set(columns)
                raise ValueError(f"table {self.name!r} has no column(s) {sorted(unknown)}")
            out = {c: row.get(c) for c in columns}
        for c in self.key:
            if out[c] is None:
                raise ValueError(f"table {self.name!r}: key column {c!r} is missing")
        for c in self.time_columns:
            value = out[c]
            if value is not None:
                if not isinstance(value, datetime) or value.tzinfo is None:
                    raise ValueError(f"{self.name}.{c} needs an aware datetime, got {value!r}")
                if value.tzinfo is not UTC and value.utcoffset():
                    out[c] = value.astimezone(UTC)
        return out


@dataclass(frozen=True, slots=True)
class Put:
    """Insert or replace a row (by the table's key)."""

    table: str
    row: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the row with this key, if any."""

    table: str
    key: tuple[Any, ...]


Write = Put | Delete
"""One change a batch makes to a read model."""


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """A projection's progress as its backend keeps it.

    Attributes:
        name: the projection.
        position: the last log position folded (0: none yet).
        version: the projection's :attr:`Projection.version` that wrote the tables.
        updated_at: when the checkpoint last moved (None: never).
    """

    name: str
    position: int
    version: int
    updated_at: datetime | None


class ProjectionBatch:
    """The writes of one batch, and reads that see them (read-your-writes).

    :meth:`Projection.apply` receives one and calls :meth:`get`, :meth:`put` and
    :meth:`delete`; nothing reaches the backend until the runner commits the batch together
    with the checkpoint.
    """

    def __init__(self, models: ReadModels, tables: Mapping[str, Table], *, shadow: bool) -> None:
        self._models = models
        self._tables = tables
        self._shadow = shadow
        self._pending: dict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = {}
        self._read: dict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = {}
        self.scratch: dict[str, Any] = {}
        """Per-batch memo for the projection (e.g. folded state it writes once, in
        :meth:`Projection.flush`); dropped with the batch, so a batch that does not commit
        leaves nothing behind."""

    def _table(self, name: str) -> Table:
        try:
            return self._tables[name]
        except KeyError:
            raise ValueError(f"this projection declares no table {name!r}") from None

    async def get(self, table: str, *key: Any) -> dict[str, Any] | None:
        """The row with ``key`` as this batch would leave it, or None."""
        t = self._table(table)
        if len(key) != len(t.key):
            raise ValueError(f"table {table!r} has a key of {len(t.key)} column(s)")
        pending = self._pending.get((table, key), ...)
        if pending is not ...:
            return dict(pending) if pending is not None else None
        # A prefetched row is handed out once (the caller may change it in place, so the
        # cache lets it go); a second get of a row not put meanwhile reads it again.
        read = self._read.pop((table, key), ...)
        if read is None:
            self._read[(table, key)] = None
        if read is not ...:
            return read
        return await self._models.get(t, key, shadow=self._shadow)

    async def prefetch(self, table: str, keys: Iterable[tuple[Any, ...]]) -> None:
        """Read the stored rows of ``keys`` in one go, so later :meth:`get` calls for them
        cost no round trip (a projection that knows a batch's keys up front calls this from
        :meth:`Projection.flush` before folding). The rows are as of the batch's start:
        nothing but this batch writes them before its commit, and a commit that meets a
        moved checkpoint is dropped whole."""
        t = self._table(table)
        wanted: list[tuple[Any, ...]] = []
        seen: set[tuple[Any, ...]] = set()
        for key in keys:
            key = tuple(key)
            if len(key) != len(t.key):
                raise ValueError(f"table {table!r} has a key of {len(t.key)} column(s)")
            if key in seen or (table, key) in self._pending or (table, key) in self._read:
                continue
            seen.add(key)
            wanted.append(key)
        if not wanted:
            return
        found = await self._models.get_many(t, wanted, shadow=self._shadow)
        for key in wanted:
            self._read[(table, key)] = found.get(key)

    def put(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert or replace ``row`` (missing columns become None)."""
        t = self._table(table)
        checked = t.check_row(row)
        self._pending[(table, t.key_of(checked))] = checked

    def delete(self, table: str, *key: Any) -> None:
        """Delete the row with ``key`` (nothing if there is none)."""
        t = self._table(table)
        if len(key) != len(t.key):
            raise ValueError(f"table {table!r} has a key of {len(t.key)} column(s)")
        self._pending[(table, tuple(key))] = None

    @property
    def writes(self) -> list[Write]:
        """The batch's changes, one per touched row, in first-touched order."""
        return [
            Put(table, row) if row is not None else Delete(table, key)
            for (table, key), row in self._pending.items()
        ]

    def __len__(self) -> int:
        return len(self._pending)


class Projection(ABC):
    """A read model: a name, its tables, and how one event changes them.

    Subclass it, declare :attr:`tables`, and implement :meth:`apply`::

        class PushCounts(Projection):
            name = "push_counts"
            tables = (Table("push_counts", {"repo": "text", "n": "int"}, key=("repo",)),)
            patterns = ("github.push",)

            async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
                repo = record.event.subject or "?"
                row = await batch.get("push_counts", repo) or {"repo": repo, "n": 0}
                batch.put("push_counts", {**row, "n": row["n"] + 1})

    ``apply`` must depend only on the event and the rows (no clock, no network): a rebuild
    folds the same log again and must reach the same rows.

    Attributes:
        name: the projection's durable name (its checkpoint is kept under it).
        tables: the tables it owns.
        patterns: event-type patterns it folds (default: every event, ``$``-streams too).
        version: bump it when ``apply`` changes meaning; a projection whose tables were
            written by another version is reported ``stale`` until rebuilt.
    """

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    patterns: ClassVar[tuple[str, ...]] = ("**",)
    version: ClassVar[int] = 1

    @abstractmethod
    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Fold one event into the read model through ``batch``."""

    async def flush(self, batch: ProjectionBatch) -> None:  # noqa: B027 - optional hook
        """Called once per batch after the last :meth:`apply`, before the commit: a
        projection that folds into ``batch.scratch`` writes its rows here."""

    def handles(self, record: RecordedEvent) -> bool:
        """Whether :meth:`apply` needs to see ``record`` (by :attr:`patterns`).

        The answer depends on the event's type alone, and a log holds few distinct types,
        so it is remembered per type (at most :data:`_HANDLES_MEMO` of them; past that the
        memo starts again, so types made up by outside input cannot grow it)."""
        memo: dict[str, bool] | None = self.__dict__.get("_handles_memo")
        if memo is None:
            memo = self.__dict__["_handles_memo"] = {}
        kind = record.event.type
        answer = memo.get(kind)
        if answer is None:
            matchers = self.__dict__.get("_matchers")
            if matchers is None:
                matchers = self.__dict__["_matchers"] = [compile_pattern(p) for p in self.patterns]
            answer = any(m.matches(kind) for m in matchers)
            if len(memo) >= _HANDLES_MEMO:
                memo.clear()
            memo[kind] = answer
        return answer

    def table(self, name: str) -> Table:
        """The declared table ``name``."""
        for t in self.tables:
            if t.name == name:
                return t
        raise ValueError(f"projection {self.name!r} declares no table {name!r}")


Order = Sequence[str]
"""Columns to sort by; prefix one with ``-`` for descending (all must share a direction)."""


@dataclass(frozen=True, slots=True)
class Query:
    """A bounded, keyset-paginated listing of one table.

    Attributes:
        where: column -> value equalities (None matches NULL).
        prefix: (column, text) the column starts with.
        since: (column, lower bound) inclusive, for time ranges.
        until: (column, upper bound) exclusive.
        order: see :data:`Order`; the key columns are appended so the order is total.
        after: the sort values of the last row of the previous page (a cursor).
        limit: at most this many rows.
    """

    where: Mapping[str, Any] = field(default_factory=dict)
    prefix: tuple[str, str] | None = None
    since: tuple[str, Any] | None = None
    until: tuple[str, Any] | None = None
    order: Order = ()
    after: Sequence[Any] | None = None
    limit: int = 100


def order_columns(table: Table, order: Order) -> tuple[list[str], bool]:
    """The full sort columns of ``order`` on ``table`` and whether they are descending."""
    cols = [c.lstrip("-") for c in order]
    descs = {c.startswith("-") for c in order}
    if len(descs) > 1:
        raise ValueError("every order column must sort the same direction")
    desc = descs == {True}
    for c in cols:
        if c not in table.columns:
            raise ValueError(f"table {table.name!r} has no column {c!r}")
    cols += [k for k in table.key if k not in cols]
    return cols, desc


def check_query(table: Table, query: Query) -> None:
    """Raise ValueError unless ``query`` names only columns of ``table`` and is bounded."""
    for c in query.where:
        if c not in table.columns:
            raise ValueError(f"table {table.name!r} has no column {c!r}")
    for bound in (query.prefix, query.since, query.until):
        if bound is not None and bound[0] not in table.columns:
            raise ValueError(f"table {table.name!r} has no column {bound[0]!r}")
    if not 1 <= query.limit <= 10_000:
        raise ValueError(f"limit must be between 1 and 10000, got {query.limit}")
    cols, _ = order_columns(table, query.order)
    if query.after is not None and len(query.after) != len(cols):
        raise ValueError(f"a cursor on this order has {len(cols)} values")


def time_key(value: datetime) -> str:
    """A UTC time as fixed-width text that sorts like the time (SQLite's storage):
    ``2026-12-05T00:12:10.123456Z``."""
    last = _last_time_key[0]
    if value == last[0]:
        return last[1]  # the events of one commit share their time: format it once
    # isoformat is cheaper than strftime and, without a zone and with the microseconds
    # always written, gives the same fixed-width text.
    key = value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    _last_time_key[0] = (value, key)  # one tuple, swapped whole: safe from any thread
    return key


_last_time_key: list[tuple[datetime, str]] = [
    (datetime.min.replace(tzinfo=UTC), "0001-01-01T00:00:00.000000Z")
]


@dataclass(frozen=True, slots=True)
class Commit:
    """One projection's part of :meth:`ReadModels.commit_many`: its batch's writes and the
    move of its live checkpoint from ``expected`` to ``position``."""

    projection: Projection
    writes: Sequence[Write]
    expected: int
    position: int


class ReadModels(ABC):
    """The port every read-model backend implements (memory, SQLite, PostgreSQL).

    Choose one with :func:`contexten.projections.create_read_models`; core code never imports
    a backend module. Open it after the event store it sits beside.
    """

    url: str

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the checkpoint table. Idempotent."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    async def ensure(self, projection: Projection) -> None:
        """Create ``projection``'s tables and checkpoint if missing (never drops anything)."""

    @abstractmethod
    async def checkpoint(self, name: str, *, shadow: bool = False) -> CheckpointState:
        """The projection's checkpoint (position 0 and version 0 if never written)."""

    @abstractmethod
    async def commit(
        self,
        projection: Projection,
        writes: Sequence[Write],
        *,
        expected: int,
        position: int,
        shadow: bool = False,
    ) -> None:
        """Write ``writes`` and move the checkpoint from ``expected`` to ``position``, atomically.

        Raises:
            ProjectionConflict: the checkpoint is not at ``expected`` (someone else moved it);
                nothing was written.
        """

    async def commit_many(self, commits: Sequence[Commit]) -> set[str]:
        """:meth:`commit` several projections' batches; return the names of those whose
        checkpoint was not at its ``expected`` (nothing of theirs is written; the others'
        batches are).

        A process folding several projections from one read commits them together: a
        backend may do it in one transaction (one round trip, one ``BEGIN``/``COMMIT``),
        each batch still conditional on its own checkpoint. This default commits them one
        by one.
        """
        conflicted: set[str] = set()
        for c in commits:
            try:
                await self.commit(c.projection, c.writes, expected=c.expected, position=c.position)
            except ProjectionConflict:
                conflicted.add(c.projection.name)
        return conflicted

    @abstractmethod
    async def get(
        self, table: Table, key: tuple[Any, ...], *, shadow: bool = False
    ) -> dict[str, Any] | None:
        """The row of ``table`` with ``key``, or None."""

    async def get_many(
        self, table: Table, keys: Sequence[tuple[Any, ...]], *, shadow: bool = False
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The rows of ``table`` with these keys, by key (keys without a row are absent).

        This default reads them one by one; a backend with a round trip per read (PostgreSQL)
        overrides it with one query, so a batch reads what it folds in a constant number of
        round trips.
        """
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        for key in keys:
            if len(key) != len(table.key):
                raise ValueError(f"table {table.name!r} has a key of {len(table.key)} column(s)")
            row = await self.get(table, tuple(key), shadow=shadow)
            if row is not None:
                out[tuple(key)] = row
        return out

    @abstractmethod
    async def query(self, table: Table, query: Query) -> list[dict[str, Any]]:
        """The rows of ``table`` that ``query`` selects, in its order, at most its limit."""

    @abstractmethod
    async def count(self, table: Table, where: Mapping[str, Any] | None = None) -> int:
        """How many rows of ``table`` match ``where`` (for small tables such as counters)."""

    @abstractmethod
    async def start_shadow(self, projection: Projection) -> None:
        """Drop any old shadow of ``projection`` and create empty shadow tables (position 0)."""

    @abstractmethod
    async def swap(self, projection: Projection) -> int:
        """Replace ``projection``'s tables by its shadow tables, and its checkpoint by the
        shadow's, in one transaction; return the new position."""
