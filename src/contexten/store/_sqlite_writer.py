"""The SQLite event store's single writer: one thread, one connection, group commit.

Callers (on the event loop) encode their events and queue a :class:`CommitRequest`. The
writer thread takes everything queued, writes it in ONE transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``, one fsync for the whole batch at ``synchronous=FULL``), then resolves each
caller's future on its loop. Nothing is acknowledged before ``COMMIT`` returned.

Inside the transaction each commit is checked in Python (dedup key, expected versions, ids
repeated within the batch) against state read once per batch, and the rows of all good
commits are inserted with a few multi-row ``INSERT`` statements. If the database rejects
the rows (an event id stored earlier), the transaction is rolled back and the batch redone
commit by commit, each under its own ``SAVEPOINT``, so only the offending commit fails.
Positions are assigned in Python as head + 1, ... under the write lock, so they are gapless
and follow commit order, also across processes (``BEGIN IMMEDIATE`` serialises every
writer of the file).

Inside each transaction, before writing, the writer checks that the files at the store's
path are still the ones it has open (:class:`~contexten.store._sqlite_schema.FileIdentity`):
once they were deleted or replaced, it stops writing for good (every commit fails with
``StoreUnavailable``) rather than acknowledge commits into a file that is gone. A batch that
fails on the file (disk full, I/O error, a lock held too long) leaves the writer
:attr:`~SqliteWriter.failing` until a batch succeeds again, so readiness can say so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from contexten.events.codec import decode_json, encode_json
from contexten.events.envelope import Event
from contexten.exceptions import (
    InvalidEvent,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from contexten.store._sqlite_leases import fenced_out
from contexten.store._sqlite_schema import FileIdentity, translate_error
from contexten.store.base import (
    AppendResult,
    ExpectedVersion,
    LeaseCheckpoint,
    StreamState,
    check_expected_version,
)

__all__ = ["CommitRequest", "Outcome", "PreparedAppend", "SqliteWriter", "WorkRequest"]

_log = logging.getLogger(__name__)

MAX_BATCH: Final = 2000
"""Most commits written in one transaction (bounds the latency of the batch's last one)."""

_IN_CHUNK: Final = 500  # names per "IN (...)" lookup, well under SQLite's variable limit

# Rows go in as multi-row INSERTs: every statement step releases and re-takes the GIL, and
# one step per row would let a busy event loop stall the writer once per row.
_INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream, version, event_id, type, recorded_at, body) VALUES ",
    7,
    "",
)
_UPSERT_STREAM: Final = (
    "INSERT INTO streams (name, version) VALUES ",
    2,
    " ON CONFLICT (name) DO UPDATE SET version = excluded.version",
)
_INSERT_DEDUP: Final = ("INSERT INTO dedup (key, results) VALUES ", 2, "")
_UPSERT_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (name, position) VALUES ",
    2,
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
)
_MAX_ROWS: Final = 256  # rows per statement, fewer if SQLite allows fewer variables


@functools.lru_cache(maxsize=64)
def _multi_row_sql(head: str, width: int, rows: int, tail: str) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return head + ",".join([one] * rows) + tail


def _insert_rows(
    conn: sqlite3.Connection, statement: tuple[str, int, str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` in few statements: full chunks, then the rest by powers of two."""
    head, width, tail = statement
    # Older SQLite builds allow only 999 variables per statement.
    most = min(_MAX_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    most = 1 << (most.bit_length() - 1)
    done, total = 0, len(rows)
    while done < total:
        size = min(most, 1 << ((total - done).bit_length() - 1))
        chunk = rows[done : done + size]
        conn.execute(
            _multi_row_sql(head, width, size, tail), [value for row in chunk for value in row]
        )
        done += size


EventRow = tuple[str, str, bytes]
"""An event ready to store: ``(event id, type, encoded body)``."""

Outcome = list[AppendResult] | BaseException


@dataclass(slots=True)
class PreparedAppend:
    """One append with its events already encoded (on the caller's side of the queue)."""

    stream: str
    expected: ExpectedVersion
    rows: list[EventRow]
    events: Sequence[Event] = ()
    """The events themselves, so the store can remember what it committed (see RecentLog)."""


@dataclass(slots=True)
class CommitRequest:
    """A commit waiting for the writer, and the future its caller awaits."""

    appends: list[PreparedAppend]
    dedup_key: str | None
    checkpoint: tuple[str, int] | None
    future: asyncio.Future[list[AppendResult]]
    lease: LeaseCheckpoint | None = None


@dataclass(slots=True)
class WorkRequest:
    """A small write of its own (a heartbeat, a claim): ``work(conn, now)`` runs in its own
    ``BEGIN IMMEDIATE`` transaction on the writer thread; ``now`` is the machine's clock in
    seconds, the one clock every process sharing the file agrees on. With ``transaction``
    False it runs outside any transaction (``VACUUM``, which SQLite refuses inside one)."""

    work: Callable[[sqlite3.Connection, float], Any]
    future: asyncio.Future[Any]
    transaction: bool = True


class _Stop:
    """Queued by :meth:`SqliteWriter.stop`: finish what is queued before it, then exit."""


class _Rejected(Exception):
    """The database refused the batch's rows (a constraint); redo commit by commit."""


@dataclass(slots=True)
class _Batch:
    """Rows and outcomes built in Python for one pass over a batch of commits."""

    outcomes: list[Outcome]
    events: list[tuple[int, str, int, str, str, int, bytes]]
    streams: dict[str, int]
    dedup: list[tuple[str, bytes]]
    checkpoints: dict[str, int]  # the last position per name wins, as it would in order
    head: int
    partitions: dict[tuple[str, int], int] = field(default_factory=dict)


class SqliteWriter:
    """Owns the write connection and the thread that group-commits queued requests.

    Args:
        conn: the write connection (schema prepared); the writer closes it when it stops.
        path: the file, for error messages.
        on_committed: called on the loop after each batch with the new head, so the store
            can wake its waiters.
        on_recorded: called on the loop after each committed batch, before its callers are
            told, with the batch, the outcomes and the batch's ``recorded_at`` (microseconds).
        identity: the identity of the files ``conn`` has open (default: taken now).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        loop: asyncio.AbstractEventLoop,
        on_committed: Callable[[int], None],
        on_recorded: Callable[[list[CommitRequest], list[Outcome], int], None] | None = None,
        identity: FileIdentity | None = None,
    ) -> None:
        self._conn = conn
        self._identity = identity if identity is not None else FileIdentity(path)
        self.lost: str | None = None
        """Why the store's files are no longer the ones open (then nothing is written)."""
        self.failing: str | None = None
        """Why the last batch could not be written, until a batch is written again."""
        self._on_recorded = on_recorded
        self._path = path
        self._loop = loop
        self._on_committed = on_committed
        self._queue: queue.SimpleQueue[CommitRequest | WorkRequest | _Stop] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, name=f"contexten-sqlite-writer:{path}", daemon=True
        )

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, request: CommitRequest | WorkRequest) -> None:
        """Queue ``request``; its future resolves after the batch holding it committed."""
        self._queue.put(request)

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._thread.is_alive()

    def unwritable(self) -> str | None:
        """Why commits cannot be written now (files gone, last batch failed), or None."""
        if self.lost is None:
            problem = self._identity.problem()
            if problem is not None:
                self._lose(problem)
        return self.lost or self.failing

    def _lose(self, problem: str) -> None:
        if self.lost is None:
            self.lost = (
                f"the SQLite event store {self._path!r}: {problem}; writes have stopped and "
                "nothing more is acknowledged: put the file back or restart on a new one"
            )
            _log.error("SQLite event store lost its file: %s", self.lost)

    async def stop(self) -> None:
        """Write everything queued so far, close the connection, end the thread."""
        if self._thread.is_alive():
            self._queue.put(_Stop())
            await asyncio.shield(self._stopped)
        self._thread.join()

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                batch: list[CommitRequest] = []
                work: WorkRequest | None = None
                item = self._queue.get()
                while True:
                    if isinstance(item, _Stop):
                        stop = True
                        break
                    if isinstance(item, WorkRequest):
                        work = item  # after the commits queued before it
                        break
                    batch.append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._write(batch)
                if work is not None:
                    self._work(work)
        finally:
            self._conn.close()
            self._call_soon(self._set_stopped)

    def _set_stopped(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)

    def _call_soon(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            _log.warning("event loop closed before the SQLite writer could report")

    def _write(self, batch: list[CommitRequest]) -> None:
        now = 0
        try:
            outcomes, head, now = self._transaction(batch)
        except StoreError as e:
            outcomes, head = [_copy_error(e) for _ in batch], None
            self._failed(str(e))
        except Exception as e:  # a bug must not kill the writer and hang every caller
            _log.exception("SQLite writer failed on a batch")
            err = StoreUnavailable(f"the SQLite event store {self._path!r} failed: {e!r}")
            outcomes, head = [_copy_error(err) for _ in batch], None
            self._failed(str(err))
        else:
            if self.failing is not None:
                _log.warning("SQLite event store writes succeed again on %s", self._path)
                self.failing = None
        self._call_soon(self._deliver, batch, outcomes, head, now)

    def _failed(self, reason: str) -> None:
        if self.failing is None and self.lost is None:
            _log.error("SQLite event store writes are failing: %s", reason)
        self.failing = reason

    def _work(self, request: WorkRequest) -> None:
        conn = self._conn
        outcome: Any
        try:
            if self.lost is not None:
                raise StoreUnavailable(self.lost)
            if request.transaction:
                conn.execute("BEGIN IMMEDIATE")
            try:
                problem = self._identity.problem()  # as for commits: never into a lost file
                if problem is not None:
                    self._lose(problem)
                    raise StoreUnavailable(self.lost or problem)
                outcome = request.work(conn, time.time())
                if request.transaction:
                    conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as e:
            outcome = translate_error(e, self._path, "writing")
        except StoreError as e:
            outcome = e
        except Exception as e:  # a bug must not kill the writer and hang every caller
            _log.exception("SQLite writer failed on a request")
            outcome = StoreUnavailable(f"the SQLite event store {self._path!r} failed: {e!r}")
        self._call_soon(_settle, request.future, outcome)

    def _deliver(
        self, batch: list[CommitRequest], outcomes: list[Outcome], head: int | None, now: int
    ) -> None:
        if head is not None and self._on_recorded is not None:
            try:
                self._on_recorded(batch, outcomes, now)
            except Exception:  # an optimisation failing must never strand the callers
                _log.exception("remembering a committed batch failed")
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

    def _transaction(
        self, batch: list[CommitRequest], *, one_by_one: bool = False
    ) -> tuple[list[Outcome], int, int]:
        """Write ``batch`` in one transaction; returns each commit's outcome, the head, the time.

        The batch's rows go in together, without a savepoint (two statements fewer per batch,
        and each statement is a trip through the GIL). If the database refuses them, the
        whole transaction is rolled back and the batch is redone commit by commit
        (``one_by_one``), each under its own savepoint, so only the offending commit fails.
        """
        conn = self._conn
        if self.lost is not None:
            raise StoreUnavailable(self.lost)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise translate_error(e, self._path, "starting a write") from e
        problem = self._identity.problem()  # under the write lock, before writing anything
        if problem is not None:
            self._rollback()
            self._lose(problem)
            raise StoreUnavailable(self.lost or problem)
        try:
            row = conn.execute(
                "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1"
            ).fetchone()
            head, last_recorded = (row[0], row[1]) if row else (0, 0)
            # recorded_at never goes backwards along the log, so as-of reads see a prefix.
            now = max(time.time_ns() // 1000, last_recorded)
            if one_by_one:
                outcomes, head = self._apply_one_by_one(batch, head, now)
            else:
                try:
                    result = self._apply(batch, head, now)
                except _Rejected:
                    self._rollback()
                    return self._transaction(batch, one_by_one=True)
                outcomes, head = result.outcomes, result.head
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise translate_error(e, self._path, "writing") from e
        except BaseException:
            self._rollback()
            raise
        return outcomes, head, now

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            _log.warning("ROLLBACK failed on %s", self._path, exc_info=True)

    def _apply_one_by_one(
        self, batch: list[CommitRequest], head: int, now: int
    ) -> tuple[list[Outcome], int]:
        outcomes: list[Outcome] = []
        for request in batch:
            self._conn.execute("SAVEPOINT one")
            try:
                result = self._apply([request], head, now)
            except _Rejected as e:
                self._conn.execute("ROLLBACK TO one")
                outcomes.append(InvalidEvent(self._explain(request, e)))
            else:
                outcomes.append(result.outcomes[0])
                head = result.head
            self._conn.execute("RELEASE one")
        return outcomes, head

    def _explain(self, request: CommitRequest, rejected: _Rejected) -> str:
        ids = [row[0] for a in request.appends for row in a.rows]
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            row = self._conn.execute(
                f"SELECT event_id FROM events WHERE event_id IN ({marks}) LIMIT 1", chunk
            ).fetchone()
            if row is not None:
                return f"event id {row[0]} is already stored"
        return str(rejected)

    def _apply(self, batch: Sequence[CommitRequest], head: int, now: int) -> _Batch:
        """Check ``batch`` in Python, then insert the good commits' rows.

        Raises:
            _Rejected: the database refused a row (an event id that is already stored).
        """
        plan = self._plan(batch, head, now)
        conn = self._conn
        try:
            _insert_rows(conn, _INSERT_EVENT, plan.events)
            _insert_rows(conn, _UPSERT_STREAM, list(plan.streams.items()))
            _insert_rows(conn, _INSERT_DEDUP, plan.dedup)
        except sqlite3.IntegrityError as e:
            raise _Rejected(f"the commit breaks a store constraint: {e}") from e
        _insert_rows(conn, _UPSERT_CHECKPOINT, list(plan.checkpoints.items()))
        if plan.partitions:
            conn.executemany(
                "UPDATE partitions SET position = ? WHERE grp = ? AND partition = ?",
                [(pos, grp, number) for (grp, number), pos in plan.partitions.items()],
            )
        return plan

    def _plan(self, batch: Sequence[CommitRequest], head: int, now: int) -> _Batch:
        versions = self._stream_versions({a.stream for r in batch for a in r.appends})
        stored = self._stored_dedup({r.dedup_key for r in batch if r.dedup_key is not None})
        fences = self._fences({r.lease for r in batch if r.lease is not None})
        plan = _Batch([], [], {}, [], {}, head)
        ids: set[str] = set()
        for request in batch:
            lease = request.lease
            if lease is not None:
                lost = fenced_out(lease, fences)
                if lost is not None:
                    plan.outcomes.append(lost)
                    continue
            key = request.dedup_key
            if key is not None and key in stored:
                plan.outcomes.append([_deduplicated(r) for r in stored[key]])
                continue
            problem = _check(request, versions, ids)
            if problem is not None:
                plan.outcomes.append(problem)
                continue
            results = []
            for a in request.appends:
                version = versions.get(a.stream, 0)
                first = plan.head + 1
                for event_id, event_type, body in a.rows:
                    plan.head += 1
                    version += 1
                    plan.events.append(
                        (plan.head, a.stream, version, event_id, event_type, now, body)
                    )
                versions[a.stream] = version
                if a.rows:
                    plan.streams[a.stream] = version
                    results.append(AppendResult(a.stream, version, first, plan.head))
                else:
                    results.append(AppendResult(a.stream, version, 0, 0))
            if key is not None:
                stored[key] = results
                plan.dedup.append((key, _encode_results(results)))
            if request.checkpoint is not None:
                name, position = request.checkpoint
                plan.checkpoints.pop(name, None)
                plan.checkpoints[name] = position
            if lease is not None and lease.position is not None:
                plan.partitions[lease.group, lease.partition] = lease.position
            plan.outcomes.append(results)
        return plan

    def _fences(self, leases: set[LeaseCheckpoint]) -> dict[tuple[str, int], tuple[str, int]]:
        """``(group, partition) -> (owner, epoch)`` of the partitions the batch's leases name."""
        found: dict[tuple[str, int], tuple[str, int]] = {}
        for key in {(lease.group, lease.partition) for lease in leases}:
            row = self._conn.execute(
                "SELECT owner, epoch FROM partitions WHERE grp = ? AND partition = ?", key
            ).fetchone()
            if row is not None:
                found[key] = (row[0], row[1])
        return found

    def _stream_versions(self, names: set[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        listed = list(names)
        for i in range(0, len(listed), _IN_CHUNK):
            chunk = listed[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                self._conn.execute(
                    f"SELECT name, version FROM streams WHERE name IN ({marks})", chunk
                ).fetchall()
            )
        return found

    def _stored_dedup(self, keys: set[str]) -> dict[str, list[AppendResult]]:
        found: dict[str, list[AppendResult]] = {}
        listed = list(keys)
        for i in range(0, len(listed), _IN_CHUNK):
            chunk = listed[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, raw in self._conn.execute(
                f"SELECT key, results FROM dedup WHERE key IN ({marks})", chunk
            ):
                found[key] = [AppendResult(*r) for r in decode_json(raw)]
        return found


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _check(request: CommitRequest, versions: dict[str, int], ids: set[str]) -> Outcome | None:
    """The error that rejects ``request`` before any write, or None; claims its ids."""
    appends = request.appends
    pending: dict[str, int] | None = {} if len(appends) > 1 else None
    mine: set[str] = set()
    for a in appends:
        actual = (
            versions.get(a.stream, 0)
            if pending is None
            else pending.get(a.stream, versions.get(a.stream, 0))
        )
        if a.expected is not StreamState.ANY:
            try:
                check_expected_version(a.stream, a.expected, actual)
            except WrongExpectedVersion as e:
                return e
        if pending is not None:
            pending[a.stream] = actual + len(a.rows)
        for row in a.rows:
            event_id = row[0]
            if event_id in ids or event_id in mine:
                return InvalidEvent(f"event id {event_id} is already stored")
            mine.add(event_id)
    ids |= mine
    return None


def _encode_results(results: list[AppendResult]) -> bytes:
    return encode_json([[r.stream, r.version, r.first_position, r.last_position] for r in results])


def _deduplicated(r: AppendResult) -> AppendResult:
    return AppendResult(r.stream, r.version, r.first_position, r.last_position, True)


def _copy_error(error: StoreError) -> StoreError:
    """A fresh instance per caller, so concurrent raises don't share one traceback."""
    try:
        copy = type(error)(*error.args)
    except TypeError:
        return error
    copy.__cause__ = error.__cause__
    return copy
