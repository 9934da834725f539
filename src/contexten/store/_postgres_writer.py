"""The PostgreSQL event store's writer: one asyncio task that group-commits.

Callers encode their events and queue a :class:`CommitRequest`; the writer takes everything
queued (up to :data:`MAX_BATCH`) and writes it in ONE transaction, then resolves each caller's
future. Nothing is acknowledged before ``COMMIT`` returned. A transaction costs four round
trips whatever the batch holds:

1. ``SELECT ... FROM log_head FOR UPDATE``: the row lock every writer (in every process)
   takes first and holds until ``COMMIT``. Positions are assigned in Python as head + 1, ...
   under it, so they are gapless and commit order equals position order: a reader tailing
   the log can never see position n + 1 before n.
2. One read of the batch's stream versions, dedup keys and already-stored event ids. Each
   commit is then checked in Python (dedup, expected versions, repeated ids) and the rows of
   the good ones planned.
3. One statement writing every row (``unnest`` arrays in data-modifying CTEs), moving the
   head and calling ``pg_notify`` with the new head for other processes' waiters.
4. ``COMMIT``.

If the database still refuses the rows (bad data the checks did not foresee), the batch is
redone commit by commit, each under its own ``SAVEPOINT``, so only the offending commit fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

import asyncpg

from contexten.events.codec import decode_json, encode_json
from contexten.exceptions import (
    InvalidEvent,
    LeaseLost,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    WrongExpectedVersion,
)
from contexten.store._postgres_schema import Statements, translate_error

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from contexten.store._postgres_schema import Connection
from contexten.store.base import (
    AppendResult,
    ExpectedVersion,
    LeaseCheckpoint,
    StreamState,
    check_expected_version,
)

__all__ = ["MAX_BATCH", "CommitRequest", "EventRow", "PostgresWriter", "PreparedAppend"]

_log = logging.getLogger(__name__)

MAX_BATCH: Final = 2000
"""Most commits written in one transaction (bounds the latency of the batch's last one)."""

EventRow = tuple[str, str, bytes]
"""An event ready to store: ``(event id, type, encoded body)``."""

Outcome = list[AppendResult] | BaseException

# Errors that blame the rows, not the connection: the batch is redone commit by commit.
_REJECTED: Final = (
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.DataError,  # server side: bad text, numbers out of range
    asyncpg.exceptions._base.DataError,  # client side: a value asyncpg cannot encode
)


@dataclass(slots=True)
class PreparedAppend:
    """One append with its events already encoded (on the caller's side of the queue)."""

    stream: str
    expected: ExpectedVersion
    rows: list[EventRow]


@dataclass(slots=True)
class CommitRequest:
    """A commit waiting for the writer, and the future its caller awaits."""

    appends: list[PreparedAppend]
    dedup_key: str | None
    checkpoint: tuple[str, int] | None
    future: asyncio.Future[list[AppendResult]]
    lease: LeaseCheckpoint | None = None


@dataclass(slots=True)
class _Rejected(Exception):
    """The database refused a batch's rows: redo it commit by commit."""


@dataclass(slots=True)
class _State:
    """What the database holds for a batch, read once under the lock, then kept up to date."""

    versions: dict[str, int]
    dedup: dict[str, list[AppendResult]]
    ids: set[str]
    fences: dict[tuple[str, int], tuple[str | None, int]] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(dict(self.versions), dict(self.dedup), set(self.ids), self.fences)


@dataclass(slots=True)
class _Plan:
    """The rows and outcomes of one pass over a batch, as columns for ``unnest``."""

    head: int
    outcomes: list[Outcome] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    stream_versions: dict[str, int] = field(default_factory=dict)
    dedup: dict[str, bytes] = field(default_factory=dict)
    checkpoints: dict[str, int] = field(default_factory=dict)
    partitions: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return bool(self.positions or self.dedup or self.checkpoints or self.partitions)


_STOP: Final = object()

# What a lost connection, a stopped server or a timeout raise (translated, not logged).
_EXPECTED: Final = (
    StoreError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class PostgresWriter:
    """The task that owns writing: batches queued commits into transactions.

    Args:
        pool: the store's connection pool (the writer keeps one of its connections).
        statements: the store's SQL.
        where: the store, for error messages (no password).
        on_committed: called with the new head after each batch that moved it.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        statements: Statements,
        where: str,
        on_committed: Callable[[int], None],
    ) -> None:
        self._pool = pool
        self._sql = statements
        self._where = where
        self._on_committed = on_committed
        self._queue: asyncio.Queue[CommitRequest | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"contexten-postgres-writer:{self._where}"
        )

    def submit(self, request: CommitRequest) -> None:
        """Queue ``request``; its future resolves after the batch holding it committed."""
        self._queue.put_nowait(request)

    @property
    def alive(self) -> bool:
        """Whether the writer task is running."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Write everything queued so far, then end the task."""
        if self._task is None:
            return
        if not self._task.done():
            self._queue.put_nowait(_STOP)
        await asyncio.wait([self._task])
        await self._release()

    # -- the task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        batch: list[CommitRequest] = []
        try:
            stop = False
            while not stop:
                item = await self._queue.get()
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    assert isinstance(item, CommitRequest)
                    batch.append(item)
                    if len(batch) >= MAX_BATCH or self._queue.empty():
                        break
                    item = self._queue.get_nowait()
                if batch:
                    await self._write(batch)
                    batch = []
        finally:
            # Cancelled (the loop is going away) or crashed: nobody may wait forever.
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, CommitRequest):
                    batch.append(item)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(
                        StoreClosed(f"the PostgreSQL event store {self._where} was closed")
                    )

    async def _write(self, batch: list[CommitRequest]) -> None:
        head: int | None
        try:
            outcomes, head = await self._transaction(batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not isinstance(e, _EXPECTED):  # a bug must not kill the writer and hang callers
                _log.exception("the PostgreSQL writer failed on a batch")
            error = translate_error(e, self._where, "writing")
            outcomes, head = [_copy_error(error, e) for _ in batch], None
        for request, outcome in zip(batch, outcomes, strict=True):
            fut = request.future
            if fut.done():  # the caller gave up (cancelled); the outcome stands regardless
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        if head is not None:
            self._on_committed(head)

    async def _connection(self) -> PoolConnectionProxy[asyncpg.Record]:
        """The writer's connection, held across batches (no pool round trip per batch)."""
        conn = self._conn
        if conn is not None and _is_dead(conn):
            await self._release()
            conn = None
        if conn is None:
            conn = self._conn = await self._pool.acquire()
        return conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self._pool.release(conn)
            except _EXPECTED:
                _log.debug("releasing the writer connection of %s failed", self._where)

    async def _transaction(self, batch: list[CommitRequest]) -> tuple[list[Outcome], int | None]:
        try:
            return await self._attempt(batch, careful=False)
        except _Rejected:
            return await self._attempt(batch, careful=True)

    async def _attempt(
        self, batch: list[CommitRequest], *, careful: bool
    ) -> tuple[list[Outcome], int | None]:
        """One transaction for ``batch``; ``careful``: each commit under its own savepoint.

        Raises:
            _Rejected: (not careful) the database refused the batch's rows.
        """
        conn = await self._connection()
        # A batch that appends nothing (checkpoints only, e.g. consumers' fenced partition
        # checkpoints) assigns no position, so it need not queue behind the log_head lock.
        appends = any(a.rows for r in batch for a in r.appends)
        try:
            await conn.execute(self._sql.begin_and_lock if appends else "BEGIN")
            start, now, state = await self._read_state(conn, batch)
            if careful:
                plan = await self._one_by_one(conn, batch, state, start, now)
            else:
                plan = _plan(batch, state, start)
                if plan.writes:
                    try:
                        await self._apply(conn, plan, plan.head != start, now)
                    except _REJECTED as e:
                        raise _Rejected from e
            await conn.execute("COMMIT")
        except BaseException:
            await self._rollback(conn)
            raise
        return plan.outcomes, plan.head if plan.head != start else None

    async def _rollback(self, conn: Connection) -> None:
        if _is_dead(conn):
            return
        try:
            await conn.execute("ROLLBACK")
        except _EXPECTED:
            # The connection is broken or stuck: drop it, the next batch takes a fresh one.
            conn.terminate()
            await self._release()

    async def _read_state(
        self, conn: Connection, batch: list[CommitRequest]
    ) -> tuple[int, datetime, _State]:
        names = list({a.stream for r in batch for a in r.appends})
        keys = list({r.dedup_key for r in batch if r.dedup_key is not None})
        ids = [row[0] for r in batch for a in r.appends for row in a.rows]
        state = _State({}, {}, set())
        head, now = -1, None
        for kind, name, number, raw, at in await conn.fetch(self._sql.plan_reads, names, keys, ids):
            if kind == 0:
                state.versions[name] = number
            elif kind == 1:
                state.dedup[name] = [AppendResult(*r) for r in decode_json(raw)]
            elif kind == 2:
                state.ids.add(name)
            else:
                head, now = number, at
        if now is None:
            raise StoreCorrupted(f"the PostgreSQL event store {self._where} lost its log_head row")
        fenced = sorted({(r.lease.group, r.lease.partition) for r in batch if r.lease is not None})
        if fenced:
            # Locked until COMMIT: a claim skips these rows, a renewal waits for them.
            rows = await conn.fetch(
                self._sql.lock_fences, [g for g, _ in fenced], [n for _, n in fenced]
            )
            state.fences = {(g, n): (owner, epoch) for g, n, owner, epoch in rows}
        return head, now, state

    async def _apply(self, conn: Connection, plan: _Plan, moved: bool, now: datetime) -> None:
        await conn.execute(
            self._sql.write,
            plan.positions,
            plan.streams,
            plan.versions,
            plan.ids,
            plan.types,
            now,
            plan.bodies,
            list(plan.stream_versions),
            list(plan.stream_versions.values()),
            list(plan.dedup),
            list(plan.dedup.values()),
            list(plan.checkpoints),
            list(plan.checkpoints.values()),
            plan.head,
            moved,
            self._sql.channel,
        )
        if plan.partitions:
            await conn.execute(
                self._sql.move_partitions,
                [g for g, _ in plan.partitions],
                [n for _, n in plan.partitions],
                list(plan.partitions.values()),
            )

    async def _one_by_one(
        self,
        conn: Connection,
        batch: list[CommitRequest],
        state: _State,
        start: int,
        now: datetime,
    ) -> _Plan:
        """Plan and write ``batch`` commit by commit, each under a savepoint."""
        result = _Plan(start)
        for request in batch:
            attempt = state.copy()
            plan = _plan([request], attempt, result.head)
            if plan.writes:
                await conn.execute("SAVEPOINT one")
                try:
                    await self._apply(conn, plan, plan.head != result.head, now)
                except _REJECTED as e:
                    await conn.execute("ROLLBACK TO SAVEPOINT one; RELEASE SAVEPOINT one")
                    result.outcomes.append(
                        InvalidEvent(f"the commit breaks a store constraint: {e}")
                    )
                    continue
                await conn.execute("RELEASE SAVEPOINT one")
            state = attempt
            result.head = plan.head
            result.outcomes.extend(plan.outcomes)
        return result


def _is_dead(conn: Connection) -> bool:
    """Whether ``conn`` is closed; a pooled one that died was already handed back."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # "connection has been released back to the pool"
        return True


def _plan(batch: Sequence[CommitRequest], state: _State, head: int) -> _Plan:
    """Check each commit of ``batch`` against ``state`` (updated as commits are accepted)."""
    plan = _Plan(head)
    for request in batch:
        lease = request.lease
        if lease is not None:
            held = state.fences.get((lease.group, lease.partition))
            if held is None:
                plan.outcomes.append(LeaseLost(lease.group, lease.partition, "no such partition"))
                continue
            if held != (lease.owner, lease.epoch):
                plan.outcomes.append(
                    LeaseLost(lease.group, lease.partition, f"now at epoch {held[1]}")
                )
                continue
        key = request.dedup_key
        if key is not None and key in state.dedup:
            plan.outcomes.append([_deduplicated(r) for r in state.dedup[key]])
            continue
        problem = _check(request, state)
        if problem is not None:
            plan.outcomes.append(problem)
            continue
        results = []
        for a in request.appends:
            version = state.versions.get(a.stream, 0)
            first = plan.head + 1
            for event_id, event_type, body in a.rows:
                plan.head += 1
                version += 1
                plan.positions.append(plan.head)
                plan.streams.append(a.stream)
                plan.versions.append(version)
                plan.ids.append(event_id)
                plan.types.append(event_type)
                plan.bodies.append(body)
            if a.rows:
                state.versions[a.stream] = version
                plan.stream_versions[a.stream] = version
                results.append(AppendResult(a.stream, version, first, plan.head))
            else:
                results.append(AppendResult(a.stream, version, 0, 0))
        if key is not None:
            state.dedup[key] = results
            plan.dedup[key] = _encode_results(results)
        if request.checkpoint is not None:
            name, position = request.checkpoint
            plan.checkpoints.pop(name, None)  # the last one wins, as it would in order
            plan.checkpoints[name] = position
        if lease is not None and lease.position is not None:
            plan.partitions[lease.group, lease.partition] = lease.position
        plan.outcomes.append(results)
    return plan


def _check(request: CommitRequest, state: _State) -> BaseException | None:
    """The error that rejects ``request`` before any write, or None; claims its ids."""
    pending: dict[str, int] = {}
    mine: set[str] = set()
    for a in request.appends:
        actual = pending.get(a.stream, state.versions.get(a.stream, 0))
        if a.expected is not StreamState.ANY:
            try:
                check_expected_version(a.stream, a.expected, actual)
            except WrongExpectedVersion as e:
                return e
        pending[a.stream] = actual + len(a.rows)
        for event_id, _, _ in a.rows:
            if event_id in state.ids or event_id in mine:
                return InvalidEvent(f"event id {event_id} is already stored")
            mine.add(event_id)
    state.ids |= mine
    return None


def _encode_results(results: list[AppendResult]) -> bytes:
    return encode_json([[r.stream, r.version, r.first_position, r.last_position] for r in results])


def _deduplicated(r: AppendResult) -> AppendResult:
    return AppendResult(r.stream, r.version, r.first_position, r.last_position, True)


def _copy_error(error: StoreError, cause: BaseException) -> StoreError:
    """A fresh instance per caller, so concurrent raises don't share one traceback."""
    try:
        copy = type(error)(*error.args)
    except TypeError:
        return error
    copy.__cause__ = cause if cause is not error else error.__cause__
    return copy
