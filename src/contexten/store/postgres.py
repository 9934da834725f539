"""The scale-out event store on PostgreSQL (``postgresql://user@host:5432/db``), via asyncpg.

Several processes (and machines) share one store; each process keeps a connection pool.

* **Durability.** A commit is acknowledged only after PostgreSQL's ``COMMIT`` returned (with
  the server's ``synchronous_commit``, on by default).
* **Group commit.** One writer task per store object writes everything queued in one
  transaction; see :mod:`contexten.store._postgres_writer`.
* **Positions.** Assigned as head + 1 while holding the lock on the one-row ``log_head``
  table until ``COMMIT``, so they are gapless and follow commit order across processes (no
  sequences: they leave gaps, and a lower value can commit after a higher one is visible).
* **Waiting.** Local commits wake :meth:`~PostgresEventStore.wait_for_new` at once. Other
  processes' commits arrive by ``LISTEN``/``NOTIFY`` (the commit transaction notifies the
  new head) on a dedicated connection, opened on the first wait; a slow poll of the head
  backs it up, and a fast one stands in while that connection is down.
* **Isolation.** Each store lives in its own PostgreSQL schema (default ``contexten``), so
  one database can hold several stores.

URL: ``postgresql://[user[:password]@]host[:port]/database[?options]`` (``postgres://`` too).
Options of the store (the rest go to asyncpg, e.g. ``sslmode``, or become server settings):

=================== ================================================= ==========
option              meaning                                           default
=================== ================================================= ==========
``schema``          the PostgreSQL schema holding the store's tables  contexten
``pool_size``       most connections in the pool (at least 2)         10
``pool_min``        connections opened up front                       1
``command_timeout`` seconds one statement may take before failing     30
``connect_timeout`` seconds to establish a connection                 10
=================== ================================================= ==========

For example ``postgresql://app@db.internal/events?schema=orders&pool_size=20``. Needs
PostgreSQL 12 or later and a UTF8 database; the user needs ``CREATE`` on the database the
first time (to create the schema), or an existing schema it may create tables in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import asyncpg

from contexten.events.codec import decode_event, encode_event
from contexten.exceptions import (
    ConfigurationError,
    InvalidEvent,
    PartitionsHeld,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
)
from contexten.store._postgres_retention import RetentionSql
from contexten.store._postgres_schema import (
    MIGRATIONS,
    Migration,
    Statements,
    prepare_schema,
    quote_ident,
    translate_error,
)
from contexten.store._postgres_url import PostgresSettings, parse_postgres_url
from contexten.store._postgres_writer import CommitRequest, PostgresWriter, PreparedAppend

if TYPE_CHECKING:
    from contexten.store._postgres_schema import Connection
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
)
from contexten.store.retention import Candidate, Pruned

__all__ = ["PostgresEventStore", "PostgresSettings", "parse_postgres_url"]

_log = logging.getLogger(__name__)

_BIGINT: Final = range(-(2**63), 2**63)

# What asyncpg and the OS raise when the server, the network or a statement fails.
_DRIVER_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_T = TypeVar("_T")


async def _keep_session(conn: Connection) -> None:
    """The pool's reset on release: nothing beyond the rollback asyncpg always does.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release (a round trip each time: ~7% of a busy worker's CPU).
    The store's pool connections never leave session state behind: advisory locks are
    transaction-scoped (``pg_advisory_xact_lock``), nothing runs ``SET`` outside
    ``SET LOCAL``, cursors live in transactions, and ``LISTEN`` has its own connection
    outside the pool. An open transaction is still rolled back by the pool before this
    runs, so a connection released mid-transaction cannot leak it. Code that adds session
    state to these connections must undo it itself (tests/store check the rules hold).
    """


class PostgresEventStore(EventStore):
    """The event store in a PostgreSQL schema, shared safely by many processes.

    Args:
        url: ``postgresql://...`` (see the module docstring for the options).
        schema: the PostgreSQL schema for the tables (overrides the URL's ``schema``).
        pool_size: most pooled connections (overrides ``pool_size``).
        pool_min: connections opened up front (overrides ``pool_min``).
        command_timeout: seconds one statement may take (overrides ``command_timeout``).
        connect_timeout: seconds to connect (overrides ``connect_timeout``).
    """

    poll_interval: ClassVar[float] = 1.0
    """Seconds between head polls while someone waits and ``LISTEN`` works (a safety net)."""
    fallback_poll_interval: ClassVar[float] = 0.05
    """Seconds between head polls while the ``LISTEN`` connection is down."""

    _migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int | None = None,
        pool_min: int | None = None,
        command_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.settings = parse_postgres_url(
            url,
            schema=schema,
            pool_size=pool_size,
            pool_min=pool_min,
            command_timeout=command_timeout,
            connect_timeout=connect_timeout,
        )
        self.schema = self.settings.schema
        self._where = self.settings.where
        self._sql = Statements.for_schema(self.schema)
        self._cache_table = f"{quote_ident(self.schema)}.cache"
        self._slots_table = f"{quote_ident(self.schema)}.slots"
        self._retention = RetentionSql(quote_ident(self.schema), self.schema)
        self._pool: asyncpg.Pool | None = None
        self._writer: PostgresWriter | None = None
        self._notifier = HeadNotifier()
        self._watcher: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._listener_lost = asyncio.Event()
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresEventStore({self._where!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or migrate the schema, start the writer. Idempotent.

        Raises:
            StoreUnavailable: the server cannot be reached, or refused (auth, privileges).
            StoreCorrupted: the schema holds someone else's tables.
            SchemaVersionError: the schema is newer than this code, or migrating it failed.
            ConfigurationError: the database does not use the UTF8 encoding.
        """
        async with self._open_lock:
            if self._writer is not None:
                return
            pool = await self._connect_pool()
            try:
                async with pool.acquire() as conn:
                    await self._check_encoding(conn)
                    await prepare_schema(conn, self.schema, self._where, self._migrations)
                    head = await conn.fetchval(self._sql.head)
            except BaseException as e:
                pool.terminate()
                if isinstance(e, _DRIVER_ERRORS):
                    raise translate_error(e, self._where, "opening") from e
                raise
            self._pool = pool
            self._notifier = HeadNotifier(head=int(head))
            self._writer = PostgresWriter(pool, self._sql, self._where, self._notifier.advance)
            self._writer.start()

    async def _connect_pool(self) -> asyncpg.Pool:
        s = self.settings
        try:
            return await asyncpg.create_pool(
                s.dsn,
                min_size=s.pool_min,
                max_size=s.pool_size,
                command_timeout=s.command_timeout,
                timeout=s.connect_timeout,
                reset=_keep_session,
                server_settings={
                    "application_name": f"contexten:{self.schema}",
                    # Plan each statement for its arguments: a generic plan made while the
                    # tables were small (a seq scan) would otherwise stay as they grow.
                    "plan_cache_mode": "force_custom_plan",
                },
            )
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, "connecting") from e

    async def _check_encoding(self, conn: Connection) -> None:
        # Stream names must compare by code point (list_streams), which needs UTF-8 bytes.
        encoding = await conn.fetchval("SHOW server_encoding")
        if encoding != "UTF8":
            raise ConfigurationError(
                f"the PostgreSQL event store {self._where} needs a UTF8 database, "
                f"not {encoding}; create it with ENCODING 'UTF8'"
            )

    async def close(self) -> None:
        """Write what is queued, stop the writer and the listener, close the pool. Idempotent.

        Anyone blocked in :meth:`wait_for_new` gets :class:`StoreClosed`.
        """
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._notifier.fail(StoreClosed(f"{self._where} was closed"))
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
            self._watcher = None
        await self._close_listener()
        await writer.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.settings.command_timeout)
            except (TimeoutError, *_DRIVER_ERRORS):
                _log.warning("closing the pool of %s failed; terminating it", self._where)
                pool.terminate()

    def _require_pool(self) -> asyncpg.Pool:
        if self._writer is None or self._pool is None:
            raise StoreClosed(
                f"{self._where} is not open (use `async with store:` or `await open()`)"
            )
        return self._pool

    # -- writing -----------------------------------------------------------------------------

    async def commit(
        self,
        appends: Sequence[Append],
        *,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
        lease: LeaseCheckpoint | None = None,
    ) -> list[AppendResult]:
        """Write atomically (see :meth:`EventStore.commit`); returns once committed.

        A caller cancelled while waiting, or told ``StoreUnavailable`` because the connection
        broke during ``COMMIT``, cannot know whether the commit was written; retry with the
        same ``dedup_key`` to find out safely.

        Raises:
            ValueError: a stream name, dedup key or checkpoint name PostgreSQL cannot store
                (empty stream name, NUL characters, lone surrogates), or a position out of
                range.
        """
        self._require_pool()
        writer = self._writer
        if writer is None or not writer.alive:
            raise StoreUnavailable(f"the PostgreSQL event store {self._where}: its writer stopped")
        prepared = [_prepare(a) for a in appends]
        if dedup_key is not None:
            _check_text("dedup_key", dedup_key)
        if checkpoint is not None:
            check_checkpoint(checkpoint)
            name, position = checkpoint
            _check_text("checkpoint name", name)
            if position not in _BIGINT:
                raise ValueError(f"checkpoint position {position} is out of range")
        if lease is not None:
            check_lease_checkpoint(lease)
            _check_text("lease group", lease.group)
            _check_text("lease owner", lease.owner)
        if not prepared and dedup_key is None and checkpoint is None and lease is None:
            return []
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        writer.submit(CommitRequest(prepared, dedup_key, checkpoint, future, lease))
        return await future

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save consumer ``name``'s position (group-committed like any write)."""
        await self.commit([], checkpoint=(name, position))

    # -- reading -----------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        pool = self._require_pool()
        try:
            return await pool.fetch(sql, *args)
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, "reading") from e

    async def _fetchval(self, sql: str, *args: object) -> Any:
        pool = self._require_pool()
        try:
            return await pool.fetchval(sql, *args)
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, "reading") from e

    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Events of ``stream`` from ``from_version`` on, oldest first (see the port)."""
        self._require_pool()
        if not _storable(stream):
            return []
        bound = None if limit is None else max(limit, 0)
        if as_of is None:
            rows = await self._fetch(self._sql.read_stream, stream, from_version, bound)
        else:
            rows = await self._fetch(
                self._sql.read_stream_as_of, stream, from_version, bound, _aware(as_of)
            )
        return _records(rows)

    async def read_all(
        self, *, after: int = 0, limit: int = 1000, as_of: datetime | None = None
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of the log after position ``after`` (see the port)."""
        if as_of is None:
            rows = await self._fetch(self._sql.read_all, after, max(limit, 0))
        else:
            rows = await self._fetch(self._sql.read_all_as_of, after, max(limit, 0), _aware(as_of))
        return _records(rows)

    async def read_all_backwards(
        self, *, before: int | None = None, limit: int = 100
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events below ``before`` (default: the head), newest first."""
        if before is None:
            rows = await self._fetch(self._sql.read_backwards, max(limit, 0))
        else:
            rows = await self._fetch(self._sql.read_backwards_before, max(limit, 0), before)
        return _records(rows)

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The stored event with id ``event_id``, or None."""
        self._require_pool()
        if not _storable(event_id):
            return None
        records = _records(await self._fetch(self._sql.get_event, event_id))
        return records[0] if records else None

    async def get_events(self, event_ids: Sequence[str]) -> list[RecordedEvent]:
        """The stored events among ``event_ids``, in log order: one query."""
        self._require_pool()
        ids = [i for i in dict.fromkeys(event_ids) if _storable(i)]
        if not ids:
            return []
        return _records(await self._fetch(self._sql.get_events, ids))

    async def stream_version(self, stream: str) -> int:
        """The stream's current version (0: no stream)."""
        self._require_pool()
        if not _storable(stream):
            return 0
        version = await self._fetchval(self._sql.stream_version, stream)
        return int(version) if version is not None else 0

    async def list_streams(self, prefix: str = "", *, limit: int = 10_000) -> list[StreamInfo]:
        """Streams whose name starts with ``prefix``, in name (code point) order.

        The prefix becomes a range (``name >= prefix AND name < end``) rather than a
        ``LIKE`` pattern, so ``%``, ``_`` and backslashes in it need no escaping and the
        primary-key index serves the query.
        """
        self._require_pool()
        if not _storable(prefix) or limit <= 0:
            return []
        end = _prefix_end(prefix)
        if end is None:
            rows = await self._fetch(self._sql.list_streams, prefix, limit)
        else:
            rows = await self._fetch(self._sql.list_streams_below, prefix, limit, end)
        return [StreamInfo(name, version) for name, version in rows]

    async def head(self) -> int:
        """The position of the last committed event (0: empty log)."""
        head = int(await self._fetchval(self._sql.head))
        self._notifier.advance(head)
        return head

    async def get_checkpoint(self, name: str) -> int | None:
        """The saved position of consumer ``name``, or None."""
        self._require_pool()
        if not _storable(name):
            return None
        position = await self._fetchval(self._sql.get_checkpoint, name)
        return int(position) if position is not None else None

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the writer runs and the server answers."""
        self._require_pool()
        if self._writer is None or not self._writer.alive:
            raise StoreUnavailable(f"the PostgreSQL event store {self._where}: its writer stopped")
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await self._fetchval("SELECT 1")
        except TimeoutError as e:
            raise StoreUnavailable(
                f"the PostgreSQL event store {self._where} did not answer in time"
            ) from e

    # -- workers and partition leases ----------------------------------------------------------

    async def _lease_write(self, doing: str, *statements: tuple[str, tuple[object, ...]]) -> Any:
        """Run ``statements`` in one transaction on a pooled connection; the last one's rows."""
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                rows: list[asyncpg.Record] = []
                for sql, args in statements:
                    rows = await conn.fetch(sql, *args)
                return rows
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, doing) from e

    # -- concurrency slots ---------------------------------------------------------------------

    async def acquire_slot(self, group: str, holder: str, owner: str, *, limit: int) -> bool:
        """Take a slot of ``group`` unless ``limit`` live ones are held (see the port).

        Acquirers of one group take a transaction-scoped advisory lock on it first, so the
        count and the insert are one step across every process; times are the server's.
        """
        for what, text in (("group", group), ("holder", holder), ("owner", owner)):
            _check_text(what, text)
        table, workers = self._slots_table, f"{quote_ident(self.schema)}.workers"
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"contexten.slots:{self.schema}:{group}",
                )
                await conn.execute(
                    f"DELETE FROM {table} WHERE grp = $1 AND owner NOT IN (SELECT worker_id "
                    f"FROM {workers} WHERE expires_at > clock_timestamp())",
                    group,
                )
                moved = await conn.fetchval(
                    f"UPDATE {table} SET owner = $3 WHERE grp = $1 AND holder = $2 RETURNING 1",
                    group,
                    holder,
                    owner,
                )
                if moved is not None:
                    return True
                taken = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE grp = $1", group)
                if taken >= limit:
                    return False
                await conn.execute(
                    f"INSERT INTO {table} (grp, holder, owner) VALUES ($1, $2, $3)",
                    group,
                    holder,
                    owner,
                )
                return True
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, "acquiring a concurrency slot") from e

    async def release_slot(self, group: str, holder: str) -> None:
        """Give ``holder``'s slot of ``group`` back (see the port)."""
        if not (_storable(group) and _storable(holder)):
            return
        await self._lease_write(
            "releasing a concurrency slot",
            (f"DELETE FROM {self._slots_table} WHERE grp = $1 AND holder = $2", (group, holder)),
        )

    # -- retention (contexten.store.retention.PrunableStore) ----------------------------------

    async def _retention_call(self, doing: str, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, doing) from e

    async def prune_dedup(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the dedup keys recorded before ``before`` (or count them)."""
        pool = self._require_pool()
        call = self._retention.prune_dedup(pool, _aware(before), dry_run)
        return await self._retention_call("pruning dedup keys", call)

    async def retention_candidates(
        self, *, before: datetime, after: int = 0, limit: int = 1000
    ) -> list[Candidate]:
        """Unpruned events outside system streams recorded before ``before``, in log order."""
        pool = self._require_pool()
        call = self._retention.candidates(pool, _aware(before), after, limit)
        return await self._retention_call("reading retention candidates", call)

    async def prune_event_data(
        self, positions: Sequence[int], marker: Mapping[str, Any], *, at: datetime
    ) -> list[Pruned]:
        """Replace the data of the events at ``positions`` by the pruned marker."""
        pool = self._require_pool()
        call = self._retention.prune_data(pool, positions, marker, _aware(at))
        return await self._retention_call("pruning event data", call)

    async def storage_bytes(self) -> int:
        """Bytes the store's tables take (``pg_total_relation_size``: indexes and TOAST too)."""
        pool = self._require_pool()
        return await self._retention_call("measuring the tables", self._retention.size(pool))

    async def reclaim_space(self) -> None:
        """``VACUUM FULL`` the events and dedup tables: gives freed space back to the file
        system, holding each table's lock while it is rewritten (commits wait)."""
        pool = self._require_pool()
        await self._retention_call("vacuuming", self._retention.reclaim(pool))

    # -- the cache table (contexten.cache.store.CacheTable) ------------------------------------

    async def cache_get(self, keys: Sequence[str]) -> dict[str, tuple[bytes, float | None]]:
        """The live cache entries among ``keys``: value and seconds left (server clock)."""
        wanted = list(keys)
        if not wanted:
            return {}
        rows = await self._fetch(
            f"SELECT key, value, extract(epoch FROM expires_at - clock_timestamp())::float8 "
            f"FROM {self._cache_table} WHERE key = ANY($1::text[]) "
            "AND (expires_at IS NULL OR expires_at > clock_timestamp())",
            wanted,
        )
        return {key: (bytes(value), left) for key, value, left in rows}

    async def cache_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store a cache entry for ``ttl`` seconds (None: no expiry), reclaiming expired ones."""
        table = self._cache_table
        await self._lease_write(
            "writing the cache",
            (f"DELETE FROM {table} WHERE expires_at <= clock_timestamp()", ()),
            (
                f"INSERT INTO {table} (key, value, expires_at) VALUES ($1, $2, "
                "clock_timestamp() + make_interval(secs => $3::float8)) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, ttl),
            ),
        )

    async def cache_delete(self, key: str) -> bool:
        """Remove a cache entry; whether it was live."""
        rows = await self._lease_write(
            "deleting from the cache",
            (
                f"DELETE FROM {self._cache_table} WHERE key = $1 RETURNING "
                "expires_at IS NULL OR expires_at > clock_timestamp()",
                (key,),
            ),
        )
        return bool(rows and rows[0][0])

    async def cache_clear(self, prefix: str) -> int:
        """Remove the cache entries whose key starts with ``prefix``; the live ones removed."""
        rows = await self._lease_write(
            "clearing the cache",
            (
                f"DELETE FROM {self._cache_table} WHERE left(key, $2) = $1 RETURNING "
                "expires_at IS NULL OR expires_at > clock_timestamp()",
                (prefix, len(prefix)),
            ),
        )
        return sum(1 for row in rows if row[0])

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
        _check_text("worker id", worker_id)
        rows = await self._lease_write(
            "renewing a worker",
            (
                self._sql.upsert_worker,
                (worker_id, None if groups is None else list(groups), meta, ttl, draining),
            ),
            (self._sql.renew_leases, (worker_id, ttl)),
        )
        return sorted(_leases(rows), key=lambda p: (p.group, p.partition))

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker and free its partitions (see the port)."""
        _check_text("worker id", worker_id)
        await self._lease_write(
            "removing a worker",
            (self._sql.remove_worker, (worker_id,)),
            (f"DELETE FROM {self._slots_table} WHERE owner = $1", (worker_id,)),
        )

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (see the port)."""
        rows = await self._fetch(self._sql.list_workers)
        return [
            WorkerInfo(wid, tuple(groups), meta, started, beat, age, left, draining)
            for wid, groups, meta, started, beat, age, left, draining in rows
        ]

    async def ensure_partitions(self, group: str, count: int, *, position: int) -> int:
        """Create a group's partitions if missing (see the port)."""
        _check_text("group", group)
        rows = await self._lease_write(
            "creating partitions",
            (self._sql.ensure_partitions, (group, count, position)),
            (self._sql.count_partitions, (group,)),
        )
        return int(rows[0][0])

    async def claim_partitions(
        self, group: str, worker_id: str, *, limit: int, ttl: float
    ) -> list[PartitionLease]:
        """Claim free or expired partitions with ``FOR UPDATE SKIP LOCKED`` (see the port)."""
        if limit <= 0:
            return []
        _check_text("group", group)
        _check_text("worker id", worker_id)
        rows = await self._lease_write(
            "claiming partitions",
            (self._sql.claim_partitions, (group, worker_id, limit, ttl)),
        )
        return sorted(_leases(rows), key=lambda p: p.partition)

    async def release_partitions(
        self, group: str, worker_id: str, partitions: Sequence[int]
    ) -> None:
        """Free partitions this worker holds (see the port)."""
        if not partitions:
            return
        await self._lease_write(
            "releasing partitions",
            (self._sql.release_partitions, (group, worker_id, list(partitions))),
        )

    async def reset_partitions(
        self, group: str, position: int, *, force: bool = False
    ) -> list[PartitionLease]:
        """Move every partition of ``group`` to ``position`` in one transaction (see the
        port)."""
        if not _storable(group):
            return []
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(self._sql.lock_group_partitions, group)
                held = sorted({owner for owner, live in rows if owner is not None and live})
                if held and not force:
                    raise PartitionsHeld(group, held)
                await conn.execute(self._sql.reset_group_partitions, group, position)
        except _DRIVER_ERRORS as e:
            raise translate_error(e, self._where, "resetting a subscription") from e
        return await self.partitions(group)

    async def partitions(self, group: str | None = None) -> list[PartitionLease]:
        """Every partition of ``group`` or of all groups (see the port)."""
        if group is None:
            rows = await self._fetch(self._sql.list_partitions)
        elif not _storable(group):
            return []
        else:
            rows = await self._fetch(self._sql.list_group_partitions, group)
        return _leases(rows)

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for_new(self, after: int, timeout: float | None = None) -> int:
        """Wait until the log's head passes ``after`` (or ``timeout``); return the head.

        Commits of this store object wake waiters at once; other processes' commits arrive
        by ``LISTEN``/``NOTIFY`` (see the module docstring).
        """
        self._require_pool()
        if self._notifier.head > after:
            return self._notifier.head
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name=f"contexten-postgres-watch:{self._where}"
            )
        return await self._notifier.wait(after, timeout)

    async def _watch(self) -> None:
        """Keep a ``LISTEN`` connection up and poll the head as a safety net."""
        try:
            await self._watch_loop()
        except Exception:  # the next wait_for_new starts a new watcher
            _log.exception("watching the head of %s failed", self._where)

    async def _watch_loop(self) -> None:
        failing = False
        while self._writer is not None:
            listening = self._listener is not None and not self._listener.is_closed()
            if not listening:
                listening = await self._listen()
            if self._notifier.has_waiters or not listening:
                try:
                    await self.head()
                except StoreClosed:
                    return
                except StoreError as e:
                    if not failing:
                        _log.warning("polling the head of %s failed: %s", self._where, e)
                    failing = True
                else:
                    failing = False
            interval = self.poll_interval if listening else self.fallback_poll_interval
            with contextlib.suppress(TimeoutError):  # a lost listener ends the nap early
                await asyncio.wait_for(self._listener_lost.wait(), interval)

    async def _listen(self) -> bool:
        """(Re)open the ``LISTEN`` connection; False if that failed (we poll meanwhile)."""
        await self._close_listener()
        s = self.settings
        try:
            conn = await asyncpg.connect(
                s.dsn,
                timeout=s.connect_timeout,
                command_timeout=s.command_timeout,
                server_settings={"application_name": f"contexten-listen:{self.schema}"},
            )
        except _DRIVER_ERRORS as e:
            _log.debug("LISTEN connection to %s failed: %s", self._where, e)
            return False
        try:
            await conn.add_listener(self._sql.channel, self._on_notify)
            conn.add_termination_listener(self._on_listener_lost)
        except _DRIVER_ERRORS as e:
            _log.debug("LISTEN on %s failed: %s", self._where, e)
            conn.terminate()
            return False
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn
        self._listener_lost.clear()
        # Commits between the last poll and LISTEN sent no notification we could receive.
        with contextlib.suppress(StoreError):
            await self.head()
        return True

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        try:
            head = int(str(payload))
        except ValueError:
            _log.warning("ignoring a malformed head notification on %s: %r", channel, payload)
            return
        self._notifier.advance(head)

    def _on_listener_lost(self, conn: object) -> None:
        self._listener_lost.set()

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), self.settings.connect_timeout)
        except (TimeoutError, *_DRIVER_ERRORS):
            conn.terminate()


# -- checks and conversions --------------------------------------------------------------------


def _prepare(append: Append) -> PreparedAppend:
    check_append(append)
    _check_text("stream", append.stream)
    rows = []
    for e in append.events:
        if not _storable(e.id):
            raise InvalidEvent(f"event id {e.id!r} cannot be stored (NUL or lone surrogate)")
        rows.append((e.id, e.type, encode_event(e)))
    return PreparedAppend(append.stream, append.expected_version, rows)


def _storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text`` (no NUL, valid UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(what: str, text: str) -> None:
    if not isinstance(text, str) or not _storable(text):
        raise ValueError(
            f"{what} {text!r} cannot be stored: PostgreSQL text takes no NUL characters "
            "or lone surrogates"
        )


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:  # surrogates are not text; skip to the next char
                code = 0xE000
            return "".join(chars) + chr(code)
    return None


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware")
    return when


def _leases(rows: Sequence[asyncpg.Record]) -> list[PartitionLease]:
    return [
        PartitionLease(grp, number, owner, epoch, position, expires_in)
        for grp, number, owner, epoch, position, expires_in in rows
    ]


def _records(rows: Sequence[asyncpg.Record]) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    for position, stream, version, recorded_at, body in rows:
        try:
            event = decode_event(body)
        except InvalidEvent as e:
            raise StoreCorrupted(f"the event at position {position} cannot be read: {e}") from e
        out.append(RecordedEvent(position, stream, version, recorded_at, event))
    return out
