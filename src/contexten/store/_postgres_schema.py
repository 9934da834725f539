"""The PostgreSQL event store's tables: schema, migrations, SQL text and error translation.

Kept apart from :mod:`contexten.store.postgres` so the store module is about behaviour and this
one about what lives in the database.

Each store lives in its own PostgreSQL schema (default ``contexten``), so one database can hold
several stores (and a test run can use a throwaway schema). Opening a store:

* creates the schema if it is missing;
* refuses a schema that holds tables but no Contexten ``schema_version`` table
  (:class:`StoreCorrupted`: someone else's tables, left untouched);
* refuses a newer schema version (:class:`SchemaVersionError`);
* migrates an older one, all steps in ONE transaction (DDL is transactional in PostgreSQL),
  under an advisory lock so that processes opening the store at once migrate it once.

Why the body is ``BYTEA`` (the msgspec JSON bytes) and not ``JSONB``: it is byte-exact (JSONB
reorders keys, drops duplicate keys and refuses ``\\u0000`` in strings, so it is not lossless
for every event the codec accepts), and it is faster (the server neither parses nor re-encodes
it, and reads hand back the very bytes the codec wrote). The port offers no queries into
payloads; a projection that needs them can add a generated JSONB column in a later migration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

import asyncpg

from contexten.exceptions import (
    SchemaVersionError,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    """A connection of its own or one borrowed from the pool."""

__all__ = [
    "MIGRATIONS",
    "SCHEMA_NAME_RE",
    "Migration",
    "Statements",
    "prepare_schema",
    "quote_ident",
    "translate_error",
]

SCHEMA_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")
"""Schema names the store accepts: plain identifiers, short enough to suffix a channel name."""

Migration = tuple[str, ...]
"""One schema step: SQL statements (``{s}`` is the quoted schema) run inside a transaction."""

_V1: Final[Migration] = (
    # Positions are assigned by the writer as head + 1 while it holds the log_head row lock,
    # never by a sequence: a sequence leaves gaps on rollback, and a lower value can commit
    # after a higher one is visible, which would make a tailing reader skip it.
    # "C" collation: names compare and sort by code point, as in Python (and SQLite).
    """CREATE TABLE {s}.events (
        position    BIGINT      PRIMARY KEY,
        stream      TEXT        COLLATE "C" NOT NULL,
        version     BIGINT      NOT NULL,
        event_id    TEXT        COLLATE "C" NOT NULL UNIQUE,
        type        TEXT        NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL,
        body        BYTEA       NOT NULL,
        UNIQUE (stream, version)
    )""",
    'CREATE TABLE {s}.streams (name TEXT COLLATE "C" PRIMARY KEY, version BIGINT NOT NULL)',
    'CREATE TABLE {s}.dedup (key TEXT COLLATE "C" PRIMARY KEY, results BYTEA NOT NULL)',
    'CREATE TABLE {s}.checkpoints (name TEXT COLLATE "C" PRIMARY KEY, position BIGINT NOT NULL)',
    # One row: the last position and its time. Every writer locks it first (UPDATE/FOR UPDATE)
    # and holds the lock to COMMIT, so commit order == position order across processes.
    """CREATE TABLE {s}.log_head (
        only_row    BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        position    BIGINT      NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL
    )""",
    "INSERT INTO {s}.log_head (position, recorded_at) VALUES (0, 'epoch')",
)

_V2_LEASES: Final[Migration] = (
    # Workers and partition leases (see contexten.bus.partitions). Every time is the
    # server's clock_timestamp(), never a worker's clock.
    """CREATE TABLE {s}.workers (
        worker_id    TEXT        COLLATE "C" PRIMARY KEY,
        groups       TEXT[]      NOT NULL,
        meta         TEXT        NOT NULL,
        started_at   TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        expires_at   TIMESTAMPTZ NOT NULL,
        draining     BOOLEAN     NOT NULL DEFAULT FALSE
    )""",
    """CREATE TABLE {s}.partitions (
        grp        TEXT        COLLATE "C" NOT NULL,
        partition  INTEGER     NOT NULL,
        owner      TEXT        COLLATE "C",
        epoch      BIGINT      NOT NULL DEFAULT 0,
        position   BIGINT      NOT NULL,
        expires_at TIMESTAMPTZ,
        PRIMARY KEY (grp, partition)
    )""",
    "CREATE INDEX partitions_owner ON {s}.partitions (owner)",
)

_V3_CACHE: Final[Migration] = (
    # The cache's store level (see contexten.cache.store): MessagePack values; expiry by
    # the server's clock_timestamp() (NULL: no expiry).
    """CREATE TABLE {s}.cache (
        key        TEXT        COLLATE "C" PRIMARY KEY,
        value      BYTEA       NOT NULL,
        expires_at TIMESTAMPTZ
    )""",
    "CREATE INDEX cache_expires_at ON {s}.cache (expires_at)",
)

_V4_SLOTS: Final[Migration] = (
    # Concurrency slots (see contexten.workflows._limits): a slot counts while its owner is a
    # live worker in the workers table; acquirers of a group serialise on an advisory lock.
    """CREATE TABLE {s}.slots (
        grp    TEXT COLLATE "C" NOT NULL,
        holder TEXT COLLATE "C" NOT NULL,
        owner  TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (grp, holder)
    )""",
    "CREATE INDEX slots_owner ON {s}.slots (owner)",
)

_V5_RETENTION: Final[Migration] = (
    # Bounded growth (see contexten.store.retention). now() is stable, so adding the column
    # rewrites nothing: keys already stored count from the migration (kept a full window
    # from the upgrade), new ones from their commit's transaction; the writer is unchanged.
    "ALTER TABLE {s}.dedup ADD COLUMN recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()",
    "CREATE INDEX dedup_recorded_at ON {s}.dedup (recorded_at)",
    # When a retention rule removed the event's data (NULL: intact).
    "ALTER TABLE {s}.events ADD COLUMN pruned_at TIMESTAMPTZ",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    _V1,
    _V2_LEASES,
    _V3_CACHE,
    _V4_SLOTS,
    _V5_RETENTION,
)
"""``MIGRATIONS[n - 1]`` brings a schema to version ``n``; the current version is the length.
Append new steps; never edit a released one."""


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Statements:
    """The store's SQL, with the schema name filled in once."""

    begin_and_lock: str
    plan_reads: str
    write: str
    head: str
    read_stream: str
    read_stream_as_of: str
    read_all: str
    read_all_as_of: str
    read_backwards: str
    read_backwards_before: str
    get_event: str
    get_events: str
    stream_version: str
    list_streams: str
    list_streams_below: str
    get_checkpoint: str
    channel: str
    lock_fences: str
    move_partitions: str
    upsert_worker: str
    renew_leases: str
    remove_worker: str
    list_workers: str
    ensure_partitions: str
    count_partitions: str
    claim_partitions: str
    release_partitions: str
    list_partitions: str
    list_group_partitions: str
    lock_group_partitions: str
    reset_group_partitions: str

    @classmethod
    def for_schema(cls, schema: str) -> Statements:
        """Build the statements for tables in ``schema``."""
        s = quote_ident(schema)
        cols = "position, stream, version, recorded_at, body"
        return cls(
            # The lock comes first, in its own statement: in READ COMMITTED each later
            # statement then sees everything committed before the lock was granted.
            begin_and_lock=f"BEGIN; SELECT 1 FROM {s}.log_head FOR UPDATE",
            # The head, its time, and what the batch's checks need, in one round trip.
            plan_reads=(
                "SELECT 3, NULL::text, position, NULL::bytea, "
                f"greatest(recorded_at, clock_timestamp()) FROM {s}.log_head "
                f"UNION ALL SELECT 0, name, version, NULL, NULL FROM {s}.streams "
                "WHERE name = ANY($1::text[]) "
                f"UNION ALL SELECT 1, key, 0, results, NULL FROM {s}.dedup "
                "WHERE key = ANY($2::text[]) "
                f"UNION ALL SELECT 2, event_id, 0, NULL, NULL FROM {s}.events "
                "WHERE event_id = ANY($3::text[])"
            ),
            # Every row of a batch in one statement (one round trip). Data-modifying CTEs all
            # run, referenced or not; each table is touched once, so ON CONFLICT never meets
            # the same row twice.
            write=(
                f"WITH ev AS (INSERT INTO {s}.events "
                "(position, stream, version, event_id, type, recorded_at, body) "
                "SELECT p, st, v, i, t, $6, b FROM unnest("
                "$1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $7::bytea[]"
                ") AS u(p, st, v, i, t, b)), "
                f"sv AS (INSERT INTO {s}.streams (name, version) "
                "SELECT * FROM unnest($8::text[], $9::bigint[]) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version), "
                f"dd AS (INSERT INTO {s}.dedup (key, results) "
                "SELECT * FROM unnest($10::text[], $11::bytea[])), "
                f"cp AS (INSERT INTO {s}.checkpoints (name, position) "
                "SELECT * FROM unnest($12::text[], $13::bigint[]) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position), "
                f"hd AS (UPDATE {s}.log_head SET position = $14, recorded_at = $6 WHERE $15) "
                "SELECT pg_notify($16, $14::text) WHERE $15"
            ),
            head=f"SELECT position FROM {s}.log_head",
            read_stream=(
                f"SELECT {cols} FROM {s}.events WHERE stream = $1 AND version >= $2 "
                "ORDER BY version LIMIT $3"
            ),
            read_stream_as_of=(
                f"SELECT {cols} FROM {s}.events WHERE stream = $1 AND version >= $2 "
                "AND recorded_at <= $4 ORDER BY version LIMIT $3"
            ),
            read_all=(
                f"SELECT {cols} FROM {s}.events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
            read_all_as_of=(
                f"SELECT {cols} FROM {s}.events WHERE position > $1 AND recorded_at <= $3 "
                "ORDER BY position LIMIT $2"
            ),
            read_backwards=f"SELECT {cols} FROM {s}.events ORDER BY position DESC LIMIT $1",
            read_backwards_before=(
                f"SELECT {cols} FROM {s}.events WHERE position < $2 ORDER BY position DESC LIMIT $1"
            ),
            get_event=f"SELECT {cols} FROM {s}.events WHERE event_id = $1",
            get_events=(
                f"SELECT {cols} FROM {s}.events WHERE event_id = ANY($1::text[]) ORDER BY position"
            ),
            stream_version=f"SELECT version FROM {s}.streams WHERE name = $1",
            list_streams=(
                f"SELECT name, version FROM {s}.streams WHERE name >= $1 ORDER BY name LIMIT $2"
            ),
            list_streams_below=(
                f"SELECT name, version FROM {s}.streams WHERE name >= $1 AND name < $3 "
                "ORDER BY name LIMIT $2"
            ),
            get_checkpoint=f"SELECT position FROM {s}.checkpoints WHERE name = $1",
            channel=f"contexten_head_{schema}",
            # Partition rows are always locked in (grp, partition) order, by the writer's
            # fences and by every lease statement, so that they can never deadlock.
            lock_fences=(
                f"SELECT p.grp, p.partition, p.owner, p.epoch FROM {s}.partitions p "
                "JOIN unnest($1::text[], $2::int[]) AS u(g, n) "
                "ON p.grp = u.g AND p.partition = u.n "
                "ORDER BY p.grp, p.partition FOR NO KEY UPDATE OF p"
            ),
            move_partitions=(
                f"UPDATE {s}.partitions p SET position = u.pos "
                "FROM unnest($1::text[], $2::int[], $3::bigint[]) AS u(g, n, pos) "
                "WHERE p.grp = u.g AND p.partition = u.n"
            ),
            upsert_worker=(
                f"INSERT INTO {s}.workers AS w (worker_id, groups, meta, started_at, "
                "heartbeat_at, expires_at, draining) VALUES ($1, coalesce($2::text[], '{}'), "
                "coalesce($3::text, ''), clock_timestamp(), clock_timestamp(), "
                "clock_timestamp() + make_interval(secs => $4), $5) "
                "ON CONFLICT (worker_id) DO UPDATE SET groups = coalesce($2::text[], w.groups), "
                "meta = coalesce($3::text, w.meta), heartbeat_at = excluded.heartbeat_at, "
                "expires_at = excluded.expires_at, draining = excluded.draining"
            ),
            renew_leases=(
                f"WITH mine AS (SELECT grp, partition FROM {s}.partitions WHERE owner = $1 "
                "ORDER BY grp, partition FOR NO KEY UPDATE) "
                f"UPDATE {s}.partitions p SET expires_at = clock_timestamp() + "
                "make_interval(secs => $2) FROM mine "
                "WHERE p.grp = mine.grp AND p.partition = mine.partition "
                "RETURNING p.grp, p.partition, p.owner, p.epoch, p.position, "
                "extract(epoch FROM p.expires_at - clock_timestamp())::float8"
            ),
            remove_worker=(
                f"WITH gone AS (DELETE FROM {s}.workers WHERE worker_id = $1), "
                f"mine AS (SELECT grp, partition FROM {s}.partitions WHERE owner = $1 "
                "ORDER BY grp, partition FOR NO KEY UPDATE) "
                f"UPDATE {s}.partitions p SET owner = NULL, expires_at = NULL FROM mine "
                "WHERE p.grp = mine.grp AND p.partition = mine.partition"
            ),
            list_workers=(
                "SELECT worker_id, groups, meta, started_at, heartbeat_at, "
                "extract(epoch FROM clock_timestamp() - heartbeat_at)::float8, "
                "extract(epoch FROM expires_at - clock_timestamp())::float8, draining "
                f"FROM {s}.workers WHERE expires_at > clock_timestamp() ORDER BY worker_id"
            ),
            ensure_partitions=(
                f"INSERT INTO {s}.partitions (grp, partition, position) "
                "SELECT $1, n, $3 FROM generate_series(0, $2 - 1) AS n "
                f"WHERE NOT EXISTS (SELECT 1 FROM {s}.partitions WHERE grp = $1) "
                "ON CONFLICT DO NOTHING"
            ),
            count_partitions=f"SELECT count(*) FROM {s}.partitions WHERE grp = $1",
            claim_partitions=(
                f"WITH free AS (SELECT grp, partition FROM {s}.partitions WHERE grp = $1 "
                "AND (owner IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp()) "
                "ORDER BY partition LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED) "
                f"UPDATE {s}.partitions p SET owner = $2, epoch = p.epoch + 1, "
                "expires_at = clock_timestamp() + make_interval(secs => $4) FROM free "
                "WHERE p.grp = free.grp AND p.partition = free.partition "
                "RETURNING p.grp, p.partition, p.owner, p.epoch, p.position, "
                "extract(epoch FROM p.expires_at - clock_timestamp())::float8"
            ),
            release_partitions=(
                f"WITH mine AS (SELECT grp, partition FROM {s}.partitions WHERE grp = $1 "
                "AND owner = $2 AND partition = ANY($3::int[]) "
                "ORDER BY grp, partition FOR NO KEY UPDATE) "
                f"UPDATE {s}.partitions p SET owner = NULL, expires_at = NULL FROM mine "
                "WHERE p.grp = mine.grp AND p.partition = mine.partition"
            ),
            list_partitions=(
                "SELECT grp, partition, owner, epoch, position, "
                "extract(epoch FROM expires_at - clock_timestamp())::float8 "
                f"FROM {s}.partitions ORDER BY grp, partition"
            ),
            list_group_partitions=(
                "SELECT grp, partition, owner, epoch, position, "
                "extract(epoch FROM expires_at - clock_timestamp())::float8 "
                f"FROM {s}.partitions WHERE grp = $1 ORDER BY partition"
            ),
            # A reset locks the group's rows in partition order (as every lease statement
            # does), then the caller checks for live leases before moving them.
            lock_group_partitions=(
                "SELECT owner, expires_at > clock_timestamp() "
                f"FROM {s}.partitions WHERE grp = $1 ORDER BY partition FOR NO KEY UPDATE"
            ),
            reset_group_partitions=(
                f"UPDATE {s}.partitions SET position = $2, epoch = epoch + 1, owner = NULL, "
                "expires_at = NULL WHERE grp = $1"
            ),
        )


# -- errors ----------------------------------------------------------------------------------

_CORRUPT: Final = (asyncpg.exceptions.DataCorruptedError, asyncpg.exceptions.IndexCorruptedError)


def translate_error(error: BaseException, where: str, doing: str) -> StoreError:
    """Map a driver or OS error to the store's exception tree (the one place that does).

    Damaged data is :class:`StoreCorrupted`; everything else that stops the store (the
    server down or refusing connections, a lost connection, a timeout, a full disk, missing
    privileges, a read-only standby) is :class:`StoreUnavailable`, with the cause in the
    message. Errors the store already raises pass through unchanged.
    """
    if isinstance(error, StoreError):
        return error
    if isinstance(error, _CORRUPT):
        return StoreCorrupted(f"the PostgreSQL event store {where} is damaged: {error}")
    if isinstance(error, TimeoutError):
        return StoreUnavailable(f"the PostgreSQL event store {where}: {doing} timed out")
    if isinstance(error, OSError):
        return StoreUnavailable(
            f"cannot reach the PostgreSQL event store {where} ({doing}): {error}; "
            "is the server running and the URL's host and port right?"
        )
    if isinstance(error, asyncpg.exceptions.InsufficientPrivilegeError):
        return StoreUnavailable(
            f"the PostgreSQL event store {where}: {doing} failed: {error} "
            "(grant the user the privileges, or create the schema for it)"
        )
    message = str(error) or type(error).__name__
    return StoreUnavailable(f"the PostgreSQL event store {where}: {doing} failed: {message}")


# -- opening ---------------------------------------------------------------------------------


async def prepare_schema(
    conn: Connection,
    schema: str,
    where: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> None:
    """Create, check and migrate the store's tables in ``schema``.

    Raises:
        StoreCorrupted: the schema holds tables but no Contexten schema.
        SchemaVersionError: a newer schema version, or a migration step failed.
        StoreUnavailable: the server cannot be reached or refused (e.g. privileges).
    """
    current = len(migrations)
    if await _version(conn, schema, where, current) == current:
        return  # the common case: no lock, no transaction
    async with conn.transaction():
        # Serialise concurrent openers (also in other processes) for this schema.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"contexten:{schema}"
        )
        version = await _version(conn, schema, where, current)
        s = quote_ident(schema)
        if version == _NO_SCHEMA:
            await conn.execute(f"CREATE SCHEMA {s}")
        if version in (_NO_SCHEMA, _EMPTY_SCHEMA):
            await conn.execute(f"CREATE TABLE {s}.schema_version (version INTEGER NOT NULL)")
            await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES (0)")
            version = 0
        for target in range(version + 1, current + 1):
            try:
                async with conn.transaction():
                    for statement in migrations[target - 1]:
                        await conn.execute(statement.format(s=s))
            except asyncpg.PostgresError as e:
                if isinstance(e, asyncpg.exceptions.InsufficientPrivilegeError):
                    raise
                raise SchemaVersionError(
                    f"migrating the PostgreSQL event store {where} from schema version "
                    f"{target - 1} to {target} failed: {e}; the schema was left unchanged"
                ) from e
        await conn.execute(f"UPDATE {s}.schema_version SET version = $1", current)


_NO_SCHEMA: Final = -2
_EMPTY_SCHEMA: Final = -1


async def _version(conn: Connection, schema: str, where: str, current: int) -> int:
    """The schema's version, or :data:`_NO_SCHEMA` / :data:`_EMPTY_SCHEMA`.

    Raises:
        StoreCorrupted: tables but no Contexten schema (or a broken version table).
        SchemaVersionError: newer than ``current``, this code's schema version.
    """
    exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    if exists is None:
        return _NO_SCHEMA
    tables = [
        r[0]
        for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
        )
    ]
    if "schema_version" not in tables:
        if tables:
            raise StoreCorrupted(
                f"the schema {schema!r} of {where} holds tables ({', '.join(tables)}) but no "
                "Contexten event store; refusing to use it (choose another ?schema=)"
            )
        return _EMPTY_SCHEMA
    rows = await conn.fetch(f"SELECT version FROM {quote_ident(schema)}.schema_version")
    if len(rows) != 1 or not isinstance(rows[0][0], int) or rows[0][0] < 0:
        raise StoreCorrupted(
            f"the schema {schema!r} of {where} has a damaged schema_version table "
            f"({len(rows)} rows, expected one with a version)"
        )
    version: int = rows[0][0]
    if version > current:
        raise SchemaVersionError(
            f"the PostgreSQL event store {where} has schema version {version}, newer than "
            f"this Contexten's {current}; upgrade Contexten to open it"
        )
    return version
