"""The embedded, durable event store on SQLite (``sqlite:///path/contexten.db``).

One file holds everything; several processes may share it (``contexten serve`` taking
webhooks and ``contexten worker`` running handlers, say).

* **Durability.** WAL journal, ``synchronous=FULL``: a commit is acknowledged only after
  SQLite's ``COMMIT`` returned, i.e. after the WAL was fsynced.
* **Group commit.** One writer thread owns the write connection and writes everything
  queued in one transaction (one fsync); see :mod:`contexten.store._sqlite_writer`.
* **Positions.** Assigned as head + 1 under SQLite's write lock (``BEGIN IMMEDIATE``), so they
  are gapless and follow commit order across threads and processes.
* **Reads** use their own connections on a small thread pool: WAL readers see the last
  committed snapshot and never wait for the writer.
* **Waiting.** Local commits wake :meth:`~SqliteEventStore.wait_for_new` at once; while
  someone waits, a watcher polls the head every :attr:`~SqliteEventStore.poll_interval`
  seconds to notice other processes' commits.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, with optional
query options ``busy_timeout`` (seconds to wait for another process's lock, default 5) and
``readers`` (read connections, default 2): ``sqlite:///contexten.db?busy_timeout=10``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import parse_qsl, unquote

from contexten.events.codec import decode_event, encode_event
from contexten.exceptions import (
    ConfigurationError,
    InvalidEvent,
    LeaseLost,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
)
from contexten.observability.redaction import redact_url
from contexten.store import _sqlite_cache as cache_table
from contexten.store import _sqlite_leases as leases
from contexten.store import _sqlite_retention as retention
from contexten.store._recent import RecentLog
from contexten.store._sqlite_leases import save_checkpoints as _save_lease_checkpoints
from contexten.store._sqlite_schema import (
    MIGRATIONS,
    FileIdentity,
    Migration,
    connect,
    prepare_schema,
    translate_error,
)
from contexten.store._sqlite_writer import (
    CommitRequest,
    Outcome,
    PreparedAppend,
    SqliteWriter,
    WorkRequest,
)
from contexten.store.base import (
    Append,
    AppendResult,
    EventStore,
    HeadNotifier,
    LeaseCheckpoint,
    PartitionLease,
    RecordedEvent,
    StreamInfo,
    WorkerInfo,
    check_append,
    check_checkpoint,
    check_lease_checkpoint,
    check_saved_position,
)
from contexten.store.retention import Candidate, Pruned

__all__ = ["SqliteEventStore", "parse_sqlite_url"]

_RECENT_CAPACITY: Final = 10_000
"""Committed records kept in memory for tailing readers. A consumer lags by a batch or two,
so five of the largest batches (2,000 commits) are plenty; every record it holds (with its
decoded data) is scanned by each full garbage collection, so a larger window made those
pauses grow to ~80 ms with 5 KB webhook payloads (B3's p99)."""

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_COLUMNS: Final = "position, stream, version, recorded_at, body"
_IDS_PER_QUERY: Final = 500  # below SQLite's default limit of bound parameters
_OPTIONS: Final[dict[str, tuple[type, str]]] = {
    "busy_timeout": (float, "a number of seconds"),
    "readers": (int, "a whole number"),
}


def parse_sqlite_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a ``sqlite:`` URL into an absolute file path and its options.

    Raises:
        ConfigurationError: not a ``sqlite:`` URL, no path, ``:memory:``, or a bad option.
    """
    base, _, query = url.partition("?")
    scheme, colon, rest = base.partition(":")
    if scheme.lower() != "sqlite" or not colon:
        raise ConfigurationError(f"{url!r} is not a sqlite: URL (sqlite:///path/contexten.db)")
    if rest.startswith("///"):
        path = rest[3:]
    elif rest.startswith("//"):
        path = rest[2:]
        if not path:
            raise ConfigurationError(f"{url!r} names no file (sqlite:///path/contexten.db)")
        raise ConfigurationError(
            f"{redact_url(url)!r}: a SQLite URL names a file, not a host; use "
            "sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    else:
        path = rest
    path = unquote(path)
    if not path:
        raise ConfigurationError(f"{url!r} names no file (sqlite:///path/contexten.db)")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"{url!r}: the SQLite store needs a file shared by its connections; "
            "use memory:// for an in-memory store"
        )
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise ConfigurationError(f"{url!r}: unknown option {name!r} (known: {known})")
        kind, described = _OPTIONS[name]
        try:
            options[name] = kind(value)
        except ValueError:
            raise ConfigurationError(
                f"{url!r}: option {name!r} must be {described}, got {value!r}"
            ) from None
    return os.path.abspath(path), options


class SqliteEventStore(EventStore):
    """The event store in one SQLite file, durable and shareable between processes.

    Args:
        url: ``sqlite:///path`` (see the module docstring for forms and options).
        busy_timeout: seconds to wait for another process's write lock before a commit
            fails with ``StoreUnavailable`` (overrides the URL option; default 5).
        readers: read connections (threads) serving reads in parallel (default 2).
    """

    poll_interval: ClassVar[float] = 0.025
    """Seconds between head polls while someone waits (to notice other processes)."""

    _migrations: ClassVar[Sequence[Migration]] = MIGRATIONS

    def __init__(
        self,
        url: str = "sqlite:///contexten.db",
        *,
        busy_timeout: float | None = None,
        readers: int | None = None,
    ) -> None:
        self.url = url
        self.path, options = parse_sqlite_url(url)
        self.busy_timeout = float(
            busy_timeout if busy_timeout is not None else options.get("busy_timeout", 5.0)
        )
        self.readers = int(readers if readers is not None else options.get("readers", 2))
        if self.busy_timeout < 0 or self.readers < 1:
            raise ConfigurationError(f"{url!r}: busy_timeout must be >= 0 and readers >= 1")
        self._writer: SqliteWriter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._notifier = HeadNotifier()
        self._recent = RecentLog(_RECENT_CAPACITY)
        self._tailed = False
        """Whether anything in this process reads the log (then commits are remembered)."""
        self._watcher: asyncio.Task[None] | None = None
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteEventStore({self.url!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating or migrating) the file and start the writer. Idempotent.

        Raises:
            StoreCorrupted: the file is not a Contexten store or is damaged.
            SchemaVersionError: the file has a newer schema, or migrating it failed.
            StoreUnavailable: the file or its directory cannot be opened.
        """
        async with self._open_lock:
            if self._writer is not None:
                return
            loop = asyncio.get_running_loop()
            executor = ThreadPoolExecutor(self.readers, thread_name_prefix="contexten-sqlite-read")
            try:
                conn, head, identity = await loop.run_in_executor(
                    executor, self._open_writer_connection
                )
            except BaseException:
                executor.shutdown(wait=True)
                raise
            self._executor = executor
            self._notifier = HeadNotifier(head=head)
            self._recent.clear()
            self._writer = SqliteWriter(
                conn, self.path, loop, self._notifier.advance, self._remember, identity
            )
            self._writer.start()

    def _open_writer_connection(self) -> tuple[sqlite3.Connection, int, FileIdentity]:
        conn = connect(self.path, busy_timeout=self.busy_timeout)
        try:
            prepare_schema(conn, self.path, self._migrations)
            self._prepare_write_connection(conn)
            head = _select_head(conn)  # also opens the WAL, so its identity is taken too
            return conn, head, FileIdentity(self.path)
        except sqlite3.Error as e:
            conn.close()
            raise translate_error(e, self.path, "opening") from e
        except BaseException:
            conn.close()
            raise

    def _remember(self, batch: list[CommitRequest], outcomes: list[Outcome], now: int) -> None:
        """Keep what this store just committed, so tailing readers skip the database.

        Only once something in this process has read the log: a process that only writes
        (``contexten serve --no-dispatch``) would otherwise build and hold up to
        ``_RECENT_CAPACITY`` records nobody reads (B3: 5% of its event loop, and the
        webhooks' bodies in memory). A window that starts late is still correct: a read
        before its first position goes to the file.
        """
        if not self._tailed:
            return
        recorded_at = _EPOCH + timedelta(microseconds=now)
        recent = self._recent
        for request, outcome in zip(batch, outcomes, strict=True):
            # A deduplicated commit wrote nothing (and may differ from the original's shape).
            if isinstance(outcome, BaseException) or any(r.deduplicated for r in outcome):
                continue
            for append, result in zip(request.appends, outcome, strict=False):
                events = append.events
                if not events or len(events) != len(append.rows):
                    continue
                version = result.version - len(events)
                for i, event in enumerate(events, 1):
                    recent.add(
                        RecordedEvent(
                            result.first_position + i - 1,
                            append.stream,
                            version + i,
                            recorded_at,
                            event,
                        )
                    )

    def _prepare_write_connection(self, conn: sqlite3.Connection) -> None:
        """Hook for subclasses (tests) to configure the write connection; does nothing."""

    async def close(self) -> None:
        """Write what is queued, stop the writer and close every connection. Idempotent.

        Anyone blocked in :meth:`wait_for_new` gets :class:`StoreClosed`.
        """
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._notifier.fail(StoreClosed(f"{self.url} was closed"))
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
            self._watcher = None
        await writer.stop()
        self._recent.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._conns_lock:
            conns, self._read_conns = self._read_conns, []
        for conn in conns:
            conn.close()

    def _require_writer(self) -> SqliteWriter:
        if self._writer is None:
            raise StoreClosed(f"{self.url} is not open (use `async with store:` or `await open()`)")
        return self._writer

    # -- writing -----------------------------------------------------------------------------

    async def commit(
        self,
        appends: Sequence[Append],
        *,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
        lease: LeaseCheckpoint | None = None,
    ) -> list[AppendResult]:
        """Write atomically (see :meth:`EventStore.commit`); returns once durable.

        The events are encoded here, on the caller's side, so the writer thread only writes.
        A caller cancelled while waiting cannot know whether the commit was written; retry
        with the same ``dedup_key`` to find out safely.
        """
        writer = self._require_writer()
        if not writer.alive:
            raise StoreUnavailable(f"the SQLite event store {self.path!r}: its writer stopped")
        if writer.lost is not None:
            raise StoreUnavailable(writer.lost)
        prepared = [_prepare(a) for a in appends]
        if checkpoint is not None:
            check_checkpoint(checkpoint)
        if lease is not None:
            check_lease_checkpoint(lease)
        if not prepared and dedup_key is None and checkpoint is None and lease is None:
            return []
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        writer.submit(CommitRequest(prepared, dedup_key, checkpoint, future, lease))
        return await future

    async def _work(self, work: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run ``work`` in its own write transaction on the writer thread."""
        writer = self._require_writer()
        if not writer.alive:
            raise StoreUnavailable(f"the SQLite event store {self.path!r}: its writer stopped")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        writer.submit(WorkRequest(work, future))
        return await future

    async def save_checkpoints(self, leases: Sequence[LeaseCheckpoint]) -> list[LeaseLost | None]:
        """Move several partitions' checkpoints in one write of the writer thread (see the
        port): a consumer saving its partitions every 50 ms made one commit request each."""
        for lease in leases:
            check_saved_position(lease)
        if not leases:
            return []
        return await self._work(functools.partial(_save_lease_checkpoints, list(leases)))

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save consumer ``name``'s position durably (group-committed like any write)."""
        await self.commit([], checkpoint=(name, position))

    # -- reading -----------------------------------------------------------------------------

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        self._require_writer()
        executor = self._executor
        if executor is None:  # pragma: no cover - open() sets both
            raise StoreClosed(f"{self.url} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._run_read, query)

    def _run_read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, busy_timeout=self.busy_timeout, read_only=True)
            with self._conns_lock:
                self._read_conns.append(conn)
            self._local.conn = conn
        try:
            return query(conn)
        except sqlite3.Error as e:
            raise translate_error(e, self.path, "reading") from e

    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Events of ``stream`` from ``from_version`` on, oldest first (see the port)."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND version >= ?"
        args: list[object] = [stream, from_version]
        if as_of is not None:
            sql += " AND recorded_at <= ?"
            args.append(_micros(as_of))
        sql += " ORDER BY version LIMIT ?"
        args.append(-1 if limit is None else max(limit, 0))
        return await self._read(functools.partial(_select_records, sql, args))

    async def read_all(
        self, *, after: int = 0, limit: int = 1000, as_of: datetime | None = None
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of the log after position ``after`` (see the port).

        The newest events this store committed itself come from memory (see
        :class:`~contexten.store._recent.RecentLog`); anything else from the file.
        """
        if as_of is None and limit > 0:
            self._require_writer()
            self._tailed = True
            recent = self._recent.read(after, limit)
            if recent is not None:
                return recent
        sql = f"SELECT {_COLUMNS} FROM events WHERE position > ?"
        args: list[object] = [after]
        if as_of is not None:
            sql += " AND recorded_at <= ?"
            args.append(_micros(as_of))
        sql += " ORDER BY position LIMIT ?"
        args.append(max(limit, 0))
        return await self._read(functools.partial(_select_records, sql, args))

    async def read_all_backwards(
        self, *, before: int | None = None, limit: int = 100
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events below ``before`` (default: the head), newest first."""
        sql = f"SELECT {_COLUMNS} FROM events"
        args: list[object] = []
        if before is not None:
            sql += " WHERE position < ?"
            args.append(before)
        sql += " ORDER BY position DESC LIMIT ?"
        args.append(max(limit, 0))
        return await self._read(functools.partial(_select_records, sql, args))

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The stored event with id ``event_id``, or None."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE event_id = ?"
        records = await self._read(functools.partial(_select_records, sql, [event_id]))
        return records[0] if records else None

    async def get_events(self, event_ids: Sequence[str]) -> list[RecordedEvent]:
        """The stored events among ``event_ids``, in log order: one query per 500 ids."""
        ids = list(dict.fromkeys(event_ids))
        found: list[RecordedEvent] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})"
            found.extend(await self._read(functools.partial(_select_records, sql, chunk)))
        return sorted(found, key=lambda r: r.position)

    async def stream_version(self, stream: str) -> int:
        """The stream's current version (0: no stream)."""
        return await self._read(
            functools.partial(_select_int, "SELECT version FROM streams WHERE name = ?", stream)
        )

    async def list_streams(self, prefix: str = "", *, limit: int = 10_000) -> list[StreamInfo]:
        """Streams whose name starts with ``prefix``, in name order."""
        return await self._read(functools.partial(_select_streams, prefix, limit))

    async def head(self) -> int:
        """The position of the last committed event (0: empty log)."""
        head = await self._read(_select_head)
        self._notifier.advance(head)
        return head

    async def get_checkpoint(self, name: str) -> int | None:
        """The saved position of consumer ``name``, or None."""
        sql = "SELECT position FROM checkpoints WHERE name = ?"
        return await self._read(functools.partial(_select_optional_int, sql, name))

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store can take writes now.

        That is: the writer runs, the files at the path are the ones open (not deleted or
        replaced), the last group commit did not fail (a full disk), and the file answers a
        read.
        """
        writer = self._require_writer()
        if not writer.alive:
            raise StoreUnavailable(f"the SQLite event store {self.path!r}: its writer stopped")
        problem = writer.unwritable()
        if problem is not None:
            raise StoreUnavailable(problem)
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- workers and partition leases ----------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        *,
        ttl: float,
        groups: Sequence[str] | None = None,
        meta: str | None = None,
        draining: bool = False,
    ) -> list[PartitionLease]:
        """Register or renew a worker and its leases (see the port)."""
        return await self._work(
            functools.partial(leases.heartbeat, worker_id, ttl, groups, meta, draining)
        )

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker and free its partitions (see the port)."""
        await self._work(functools.partial(leases.remove_worker, worker_id))

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (see the port)."""
        return await self._read(lambda conn: leases.list_workers(conn, time.time()))

    async def ensure_partitions(self, group: str, count: int, *, position: int) -> int:
        """Create a group's partitions if missing (see the port)."""
        return await self._work(functools.partial(leases.ensure, group, count, position))

    async def claim_partitions(
        self, group: str, worker_id: str, *, limit: int, ttl: float
    ) -> list[PartitionLease]:
        """Claim free or expired partitions (see the port)."""
        return await self._work(functools.partial(leases.claim, group, worker_id, limit, ttl))

    async def release_partitions(
        self, group: str, worker_id: str, partitions: Sequence[int]
    ) -> None:
        """Free partitions this worker holds (see the port)."""
        await self._work(functools.partial(leases.release, group, worker_id, list(partitions)))

    async def reset_partitions(
        self, group: str, position: int, *, force: bool = False
    ) -> list[PartitionLease]:
        """Move every partition of ``group`` to ``position`` (see the port)."""
        return await self._work(functools.partial(leases.reset, group, position, force))

    async def partitions(self, group: str | None = None) -> list[PartitionLease]:
        """Every partition of ``group`` or of all groups (see the port)."""
        return await self._read(lambda conn: leases.list_partitions(group, conn, time.time()))

    # -- concurrency slots ---------------------------------------------------------------------

    async def acquire_slot(self, group: str, holder: str, owner: str, *, limit: int) -> bool:
        """Take a slot of ``group`` unless ``limit`` live ones are held (see the port)."""
        return await self._work(functools.partial(leases.acquire_slot, group, holder, owner, limit))

    async def release_slot(self, group: str, holder: str) -> None:
        """Give ``holder``'s slot of ``group`` back (see the port)."""
        await self._work(functools.partial(leases.release_slot, group, holder))

    # -- retention (contexten.store.retention.PrunableStore) ----------------------------------

    async def prune_dedup(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the dedup keys recorded before ``before`` (or count them)."""
        return await self._work(functools.partial(retention.prune_dedup, before, dry_run))

    async def retention_candidates(
        self, *, before: datetime, after: int = 0, limit: int = 1000
    ) -> list[Candidate]:
        """Unpruned events outside system streams recorded before ``before``, in log order."""
        return await self._read(functools.partial(retention.candidates, before, after, limit))

    async def prune_event_data(
        self, positions: Sequence[int], marker: Mapping[str, Any], *, at: datetime
    ) -> list[Pruned]:
        """Replace the data of the events at ``positions`` by the pruned marker."""
        done = await self._work(
            functools.partial(retention.prune_data, list(positions), dict(marker), at)
        )
        for record in done:
            self._recent.replace(record)
        return [Pruned(r.position, r.event.correlation_id) for r in done]

    async def storage_bytes(self) -> int:
        """The size of the database file and its WAL, in bytes."""
        return retention.file_bytes(self.path)

    async def reclaim_space(self) -> None:
        """``VACUUM`` the file (rewrites it; other writers wait meanwhile), truncate the WAL."""
        writer = self._require_writer()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.submit(WorkRequest(retention.vacuum, future, transaction=False))
        await future

    # -- the cache table (contexten.cache.store.CacheTable) ------------------------------------

    async def cache_get(self, keys: Sequence[str]) -> dict[str, tuple[bytes, float | None]]:
        """The live cache entries among ``keys``: value and seconds left."""
        wanted = list(keys)
        return await self._read(lambda conn: cache_table.get(wanted, conn, time.time()))

    async def cache_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store a cache entry for ``ttl`` seconds (None: no expiry)."""
        await self._work(functools.partial(cache_table.put, key, value, ttl))

    async def cache_delete(self, key: str) -> bool:
        """Remove a cache entry; whether it was live."""
        return await self._work(functools.partial(cache_table.delete, key))

    async def cache_clear(self, prefix: str) -> int:
        """Remove the cache entries whose key starts with ``prefix``; the live ones removed."""
        return await self._work(functools.partial(cache_table.clear, prefix))

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for_new(self, after: int, timeout: float | None = None) -> int:
        """Wait until the log's head passes ``after`` (or ``timeout``); return the head.

        Commits of this store object wake waiters at once; other processes' commits are
        noticed by polling the head every :attr:`poll_interval` seconds while anyone waits.
        """
        self._require_writer()
        if self._notifier.head > after:
            return self._notifier.head
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name=f"contexten-sqlite-watch:{self.path}"
            )
        return await self._notifier.wait(after, timeout)

    async def _watch(self) -> None:
        failing = False
        while self._notifier.has_waiters and self._writer is not None:
            try:
                head = await self._read(_select_head)
            except StoreClosed:
                return
            except StoreError as e:
                if not failing:
                    _log.warning("polling the head of %s failed: %s", self.path, e)
                failing = True
            else:
                failing = False
                self._notifier.advance(head)
            await asyncio.sleep(self.poll_interval)


# -- helpers (run on reader threads) ----------------------------------------------------------


def _prepare(append: Append) -> PreparedAppend:
    check_append(append)
    rows = [(e.id, e.type, encode_event(e)) for e in append.events]
    return PreparedAppend(append.stream, append.expected_version, rows, append.events)


def _micros(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return (when - _EPOCH) // _MICROSECOND


def _select_records(
    sql: str, args: Sequence[object], conn: sqlite3.Connection
) -> list[RecordedEvent]:
    return _records(conn.execute(sql, args))


def _records(rows: Iterable[tuple[int, str, int, int, bytes]]) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    last_micros = -1
    recorded_at = _EPOCH
    for position, stream, version, micros, body in rows:
        if micros != last_micros:  # a batch shares one timestamp: convert it once
            recorded_at = _EPOCH + timedelta(microseconds=micros)
            last_micros = micros
        try:
            event = decode_event(body)
        except InvalidEvent as e:
            raise StoreCorrupted(f"the event at position {position} cannot be read: {e}") from e
        out.append(RecordedEvent(position, stream, version, recorded_at, event))
    return out


def _select_head(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT position FROM events ORDER BY position DESC LIMIT 1").fetchone()
    return int(row[0]) if row else 0


def _select_int(sql: str, arg: object, conn: sqlite3.Connection) -> int:
    row = conn.execute(sql, (arg,)).fetchone()
    return int(row[0]) if row else 0


def _select_optional_int(sql: str, arg: object, conn: sqlite3.Connection) -> int | None:
    row = conn.execute(sql, (arg,)).fetchone()
    return int(row[0]) if row else None


def _select_streams(prefix: str, limit: int, conn: sqlite3.Connection) -> list[StreamInfo]:
    out: list[StreamInfo] = []
    if limit <= 0:
        return out
    # Names sort as UTF-8 bytes in SQLite, which is code-point order, as in Python.
    # The cursor is closed explicitly: one left open would pin this connection's snapshot.
    with contextlib.closing(
        conn.execute("SELECT name, version FROM streams WHERE name >= ? ORDER BY name", (prefix,))
    ) as cursor:
        for name, version in cursor:
            if not name.startswith(prefix):
                break
            out.append(StreamInfo(name, version))
            if len(out) >= limit:
                break
    return out
