"""The SQLite event store's file: connections, schema, migrations and error translation.

Kept apart from :mod:`contexten.store.sqlite` so the store module is about behaviour and this
one about the file on disk.

A Contexten store file carries ``PRAGMA application_id`` = :data:`APPLICATION_ID` and
``PRAGMA user_version`` = the schema version. Opening a file:

* a file that is not SQLite (or is damaged) raises :class:`StoreCorrupted`;
* a SQLite database of some other application (foreign ``application_id``, or tables but no
  Contexten schema) raises :class:`StoreCorrupted` and is left untouched;
* a newer schema version raises :class:`SchemaVersionError`;
* an older one is migrated, one step at a time, in ONE transaction (all steps or none).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Final

from contexten.exceptions import (
    SchemaVersionError,
    StoreCorrupted,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "FileIdentity",
    "Migration",
    "connect",
    "prepare_schema",
    "translate_error",
]

APPLICATION_ID: Final = 0x43545854
"""``PRAGMA application_id`` of a Contexten store file ("CTXT")."""

Migration = Callable[[sqlite3.Connection], None]
"""One schema step: brings a version-``n - 1`` file to version ``n`` inside a transaction."""


def _create_v1(conn: sqlite3.Connection) -> None:
    # positions are INTEGER PRIMARY KEY without AUTOINCREMENT: the writer assigns them as
    # head + 1 inside its transaction, so a rolled-back commit never leaves a hole.
    # recorded_at is integer microseconds since the epoch (sorts, compares cheaply).
    conn.execute(
        """CREATE TABLE events (
            position    INTEGER PRIMARY KEY,
            stream      TEXT    NOT NULL,
            version     INTEGER NOT NULL,
            event_id    TEXT    NOT NULL UNIQUE,
            type        TEXT    NOT NULL,
            recorded_at INTEGER NOT NULL,
            body        BLOB    NOT NULL,
            UNIQUE (stream, version)
        )"""
    )
    conn.execute("CREATE TABLE streams (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    conn.execute("CREATE TABLE dedup (key TEXT PRIMARY KEY, results BLOB NOT NULL)")
    conn.execute("CREATE TABLE checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL)")


def _add_leases(conn: sqlite3.Connection) -> None:
    # Workers and partition leases (see contexten.bus.partitions). Times are REAL seconds
    # since the epoch from the machine's clock, which every process sharing the file shares.
    # groups is a JSON array of subscription names.
    conn.execute(
        """CREATE TABLE workers (
            worker_id    TEXT    PRIMARY KEY,
            groups       TEXT    NOT NULL,
            meta         TEXT    NOT NULL,
            started_at   REAL    NOT NULL,
            heartbeat_at REAL    NOT NULL,
            expires_at   REAL    NOT NULL,
            draining     INTEGER NOT NULL DEFAULT 0
        )"""
    )
    conn.execute(
        """CREATE TABLE partitions (
            grp        TEXT    NOT NULL,
            partition  INTEGER NOT NULL,
            owner      TEXT,
            epoch      INTEGER NOT NULL DEFAULT 0,
            position   INTEGER NOT NULL,
            expires_at REAL,
            PRIMARY KEY (grp, partition)
        )"""
    )
    conn.execute("CREATE INDEX partitions_owner ON partitions (owner)")


def _add_cache(conn: sqlite3.Connection) -> None:
    # The cache's store level (see contexten.cache.store): MessagePack values, expires_at in
    # REAL seconds since the epoch from the machine's clock (NULL: no expiry).
    conn.execute(
        """CREATE TABLE cache (
            key        TEXT PRIMARY KEY,
            value      BLOB NOT NULL,
            expires_at REAL
        )"""
    )
    conn.execute("CREATE INDEX cache_expires_at ON cache (expires_at)")


def _add_slots(conn: sqlite3.Connection) -> None:
    # Concurrency slots (see contexten.workflows._limits): a slot counts while its owner is a
    # live worker in the workers table.
    conn.execute(
        """CREATE TABLE slots (
            grp    TEXT NOT NULL,
            holder TEXT NOT NULL,
            owner  TEXT NOT NULL,
            PRIMARY KEY (grp, holder)
        )"""
    )
    conn.execute("CREATE INDEX slots_owner ON slots (owner)")


def _add_retention(conn: sqlite3.Connection) -> None:
    # Bounded growth (see contexten.store.retention). dedup keys get the time they were
    # recorded (integer microseconds, like events.recorded_at) from a column default, so the
    # writer's hot path is unchanged; SQLite cannot add a column with a non-constant default,
    # so the table is rebuilt, and the keys already stored count from now (the migration):
    # they are kept a full window from the upgrade, never dropped early. events.pruned_at
    # marks an event whose data a retention rule removed (NULL: intact).
    conn.execute(
        f"""CREATE TABLE dedup_new (
            key         TEXT    PRIMARY KEY,
            results     BLOB    NOT NULL,
            recorded_at INTEGER NOT NULL DEFAULT ({_NOW_MICROS})
        )"""
    )
    conn.execute("INSERT INTO dedup_new (key, results) SELECT key, results FROM dedup")
    conn.execute("DROP TABLE dedup")
    conn.execute("ALTER TABLE dedup_new RENAME TO dedup")
    conn.execute("CREATE INDEX dedup_recorded_at ON dedup (recorded_at)")
    conn.execute("ALTER TABLE events ADD COLUMN pruned_at INTEGER")


def _move_read_models_out(conn: sqlite3.Connection) -> None:
    # The read models (tables named rm_*, and projection_checkpoints) used to live in this
    # file; they now have one of their own beside it (contexten.projections.sqlite), so their
    # transactions never hold the write lock the event writer needs. Their copies here are
    # dropped; the read models are folded again from the log into the new file.
    names = [
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND (name LIKE 'rm\\_%' ESCAPE '\\' OR name = 'projection_checkpoints')"
        )
    ]
    for name in names:
        conn.execute(f'DROP TABLE "{name}"')


_NOW_MICROS: Final = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
"""SQL for the machine's clock in integer microseconds since the epoch (any SQLite 3)."""

MIGRATIONS: Final[tuple[Migration, ...]] = (
    _create_v1,
    _add_leases,
    _add_cache,
    _add_slots,
    _add_retention,
    _move_read_models_out,
)
"""``MIGRATIONS[n - 1]`` brings a file to schema version ``n``; the current version is the
length. Append new steps; never edit a released one."""

_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_WATCHED_SUFFIXES: Final = ("", "-wal")


class FileIdentity:
    """Whether the store's files at their paths are still the ones its connections hold open.

    SQLite keeps its database and WAL files open. If someone deletes them (``rm
    contexten.db*``) or puts another file in their place, every later commit would still
    succeed, into a file nobody will ever open again: acknowledged, then lost at the next
    restart. So the writer compares ``(st_dev, st_ino)`` of each path, once per group
    commit, with what it was when the store opened (one ``stat`` per file). Because SQLite
    holds the original files open, their inode numbers cannot be reused meanwhile: equal
    numbers mean the same file.

    Args:
        path: the database file (its ``-wal`` is watched too, from when it first exists).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._known: dict[str, tuple[int, int]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Record the identity of each watched file that exists and is not recorded yet.

        The writer thread and the event loop (readiness) both call this: the mapping is
        replaced whole, never changed in place, so a reader always sees a complete one.
        """
        known = dict(self._known)
        for suffix in _WATCHED_SUFFIXES:
            name = self.path + suffix
            if name in known:
                continue
            try:
                st = os.stat(name)
            except FileNotFoundError:
                continue
            known[name] = (st.st_dev, st.st_ino)
        self._known = known

    def problem(self) -> str | None:
        """What happened to the files since they were opened, or None when they are intact."""
        for name, identity in self._known.items():
            try:
                st = os.stat(name)
            except FileNotFoundError:
                return f"{name!r} was deleted while the store had it open"
            except OSError as e:
                return f"{name!r} cannot be checked: {e}"
            if (st.st_dev, st.st_ino) != identity:
                return f"{name!r} was replaced by another file while the store had it open"
        if len(self._known) < len(_WATCHED_SUFFIXES):
            self.refresh()
        return None


def translate_error(error: sqlite3.Error, path: str, doing: str) -> StoreError:
    """Map a ``sqlite3`` error to the store's exception tree (the one place that does)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return StoreUnavailable(
            f"the SQLite event store {path!r}: {doing} failed: the disk is full (ENOSPC / "
            f"SQLITE_FULL: {error}); writes resume once space is freed"
        )
    if code is not None and code & 0xFF in _CORRUPT_CODES:
        return StoreCorrupted(
            f"the SQLite event store {path!r} is damaged or is not a SQLite database "
            f"({error}); restore it from a backup or point the store URL elsewhere"
        )
    return StoreUnavailable(f"the SQLite event store {path!r}: {doing} failed: {error}")


def connect(
    path: str, *, busy_timeout: float, read_only: bool = False, durable: bool = True
) -> sqlite3.Connection:
    """Open one connection to ``path`` with the store's pragmas (WAL is set by the writer).

    ``durable=False`` commits without an fsync of its own (``synchronous=NORMAL``): for data
    rebuilt from the log (the read models, in a file of their own). In WAL mode such a
    commit is atomic and becomes durable at the file's next checkpoint; a power cut can undo
    the last few of them, never tear one.

    Raises:
        StoreUnavailable: the directory is missing, or the file cannot be opened.
    """
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        problem = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise StoreUnavailable(f"cannot open the SQLite event store {path!r}: {parent!r} {problem}")
    if os.path.isdir(path):
        raise StoreUnavailable(f"cannot open the SQLite event store {path!r}: it is a directory")
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # each connection is used by one thread at a time
            cached_statements=128,
        )
    except sqlite3.Error as e:
        raise StoreUnavailable(f"cannot open the SQLite event store {path!r}: {e}") from e
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as e:
        conn.close()
        raise translate_error(e, path, "configuring the connection") from e
    return conn


def prepare_schema(
    conn: sqlite3.Connection, path: str, migrations: Sequence[Migration] = MIGRATIONS
) -> None:
    """Check that ``conn``'s file is a Contexten store, switch it to WAL, migrate it.

    Raises:
        StoreCorrupted: not a SQLite file, damaged, or another application's database.
        SchemaVersionError: written by a newer schema, or a migration failed.
        StoreUnavailable: the file cannot be read or written.
    """
    try:
        _check_identity(conn, path, len(migrations))
        mode = switch_to_wal(conn)
    except sqlite3.Error as e:
        raise translate_error(e, path, "opening") from e
    if str(mode).lower() != "wal":
        raise StoreUnavailable(
            f"the SQLite event store {path!r} cannot use write-ahead logging "
            f"(journal_mode is {mode!r}); is it on a network file system?"
        )
    try:
        _migrate(conn, path, migrations)
    except sqlite3.Error as e:
        raise translate_error(e, path, "migrating the schema") from e


def switch_to_wal(conn: sqlite3.Connection) -> str:
    """Switch the file to write-ahead logging; return the journal mode it ends up in.

    When several processes open a new file at once, the switch can meet another connection's
    lock, and SQLite then answers "database is locked" at once, without calling the busy
    handler. So this retries for as long as the connection's busy timeout allows.
    """
    deadline = time.monotonic() + conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _check_identity(conn: sqlite3.Connection, path: str, current: int) -> None:
    # One read transaction: another process creating the schema meanwhile must be seen
    # wholly (tables and version) or not at all, never tables without their version.
    conn.execute("BEGIN")
    try:
        _check_identity_snapshot(conn, path, current)
    finally:
        conn.execute("COMMIT")


def _check_identity_snapshot(conn: sqlite3.Connection, path: str, current: int) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id not in (0, APPLICATION_ID):
        raise StoreCorrupted(
            f"{path!r} is a SQLite database of another application "
            f"(application_id {app_id:#x}), not a Contexten event store"
        )
    if app_id == 0 and version == 0:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            )
        ]
        if tables:
            raise StoreCorrupted(
                f"{path!r} is a SQLite database with tables {', '.join(tables)} but no "
                "Contexten schema; refusing to use it as an event store"
            )
    if version > current:
        raise SchemaVersionError(
            f"the SQLite event store {path!r} has schema version {version}, newer than "
            f"this Contexten's {current}; upgrade Contexten to open it"
        )


def _migrate(conn: sqlite3.Connection, path: str, migrations: Sequence[Migration]) -> None:
    current = len(migrations)
    if conn.execute("PRAGMA user_version").fetchone()[0] == current:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated between the check above and the lock.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > current:
            raise SchemaVersionError(
                f"the SQLite event store {path!r} has schema version {version}, newer than "
                f"this Contexten's {current}; upgrade Contexten to open it"
            )
        for target in range(version + 1, current + 1):
            try:
                migrations[target - 1](conn)
            except sqlite3.Error as e:
                raise SchemaVersionError(
                    f"migrating the SQLite event store {path!r} from schema version "
                    f"{target - 1} to {target} failed: {e}; the file was left unchanged"
                ) from e
        conn.execute(f"PRAGMA user_version = {current}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
