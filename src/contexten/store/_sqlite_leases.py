"""The SQLite store's worker registry and partition leases: the SQL, run on the writer thread.

Each function takes the write connection (inside a ``BEGIN IMMEDIATE`` transaction, so every
process sharing the file is serialised) and ``now``, the machine's clock in seconds: on one
machine every process reads the same clock, so it plays the part of the database clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from contexten.events.codec import decode_json, encode_json
from contexten.exceptions import LeaseLost, PartitionsHeld
from contexten.store.base import LeaseCheckpoint, PartitionLease, WorkerInfo

__all__ = [
    "acquire_slot",
    "claim",
    "ensure",
    "fenced_out",
    "heartbeat",
    "list_partitions",
    "list_workers",
    "release",
    "release_slot",
    "remove_worker",
    "save_checkpoints",
]

_LEASE_COLUMNS = "grp, partition, owner, epoch, position, expires_at"


def _lease(row: tuple[str, int, str | None, int, int, float | None], now: float) -> PartitionLease:
    grp, number, owner, epoch, position, expires = row
    return PartitionLease(
        grp, number, owner, epoch, position, None if expires is None else expires - now
    )


def heartbeat(
    worker_id: str,
    ttl: float,
    groups: Sequence[str] | None,
    meta: str | None,
    draining: bool,
    conn: sqlite3.Connection,
    now: float,
) -> list[PartitionLease]:
    """Upsert the worker, renew its leases, return what it holds."""
    groups_json = None if groups is None else encode_json(list(groups)).decode()
    conn.execute(
        "INSERT INTO workers (worker_id, groups, meta, started_at, heartbeat_at, expires_at, "
        "draining) VALUES (?, coalesce(?, '[]'), coalesce(?, ''), ?, ?, ?, ?) "
        "ON CONFLICT (worker_id) DO UPDATE SET groups = coalesce(?, groups), "
        "meta = coalesce(?, meta), heartbeat_at = excluded.heartbeat_at, "
        "expires_at = excluded.expires_at, draining = excluded.draining",
        (worker_id, groups_json, meta, now, now, now + ttl, int(draining), groups_json, meta),
    )
    conn.execute("UPDATE partitions SET expires_at = ? WHERE owner = ?", (now + ttl, worker_id))
    rows = conn.execute(
        f"SELECT {_LEASE_COLUMNS} FROM partitions WHERE owner = ? ORDER BY grp, partition",
        (worker_id,),
    ).fetchall()
    return [_lease(row, now) for row in rows]


def remove_worker(worker_id: str, conn: sqlite3.Connection, now: float) -> None:
    """Delete the worker and free its partitions."""
    conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
    conn.execute("DELETE FROM slots WHERE owner = ?", (worker_id,))
    conn.execute(
        "UPDATE partitions SET owner = NULL, expires_at = NULL WHERE owner = ?", (worker_id,)
    )


def list_workers(conn: sqlite3.Connection, now: float) -> list[WorkerInfo]:
    """The workers whose registration has not expired."""
    rows = conn.execute(
        "SELECT worker_id, groups, meta, started_at, heartbeat_at, expires_at, draining "
        "FROM workers WHERE expires_at > ? ORDER BY worker_id",
        (now,),
    ).fetchall()
    return [
        WorkerInfo(
            worker_id,
            tuple(decode_json(groups.encode())),
            meta,
            datetime.fromtimestamp(started, UTC),
            datetime.fromtimestamp(beat, UTC),
            now - beat,
            expires - now,
            bool(draining),
        )
        for worker_id, groups, meta, started, beat, expires, draining in rows
    ]


def ensure(group: str, count: int, position: int, conn: sqlite3.Connection, now: float) -> int:
    """Create the group's partitions if it has none; return its partition count."""
    existing = conn.execute("SELECT count(*) FROM partitions WHERE grp = ?", (group,)).fetchone()
    if existing[0]:
        return int(existing[0])
    conn.executemany(
        "INSERT INTO partitions (grp, partition, position) VALUES (?, ?, ?)",
        [(group, number, position) for number in range(count)],
    )
    return count


def claim(
    group: str, worker_id: str, limit: int, ttl: float, conn: sqlite3.Connection, now: float
) -> list[PartitionLease]:
    """Claim up to ``limit`` free or expired partitions (the write lock makes it exclusive)."""
    if limit <= 0:
        return []
    numbers = [
        r[0]
        for r in conn.execute(
            "SELECT partition FROM partitions WHERE grp = ? AND "
            "(owner IS NULL OR expires_at IS NULL OR expires_at <= ?) "
            "ORDER BY partition LIMIT ?",
            (group, now, limit),
        )
    ]
    conn.executemany(
        "UPDATE partitions SET owner = ?, epoch = epoch + 1, expires_at = ? "
        "WHERE grp = ? AND partition = ?",
        [(worker_id, now + ttl, group, number) for number in numbers],
    )
    if not numbers:
        return []
    marks = ",".join("?" * len(numbers))
    rows = conn.execute(
        f"SELECT {_LEASE_COLUMNS} FROM partitions WHERE grp = ? AND partition IN ({marks}) "
        "ORDER BY partition",
        (group, *numbers),
    ).fetchall()
    return [_lease(row, now) for row in rows]


def release(
    group: str, worker_id: str, numbers: Sequence[int], conn: sqlite3.Connection, now: float
) -> None:
    """Free the partitions among ``numbers`` that ``worker_id`` holds."""
    conn.executemany(
        "UPDATE partitions SET owner = NULL, expires_at = NULL "
        "WHERE grp = ? AND partition = ? AND owner = ?",
        [(group, number, worker_id) for number in numbers],
    )


def reset(
    group: str, position: int, force: bool, conn: sqlite3.Connection, now: float
) -> list[PartitionLease]:
    """Move every partition of ``group`` to ``position``: epochs bumped, leases freed
    (refused while one is held, unless ``force``); see the port."""
    held = sorted(
        {
            r[0]
            for r in conn.execute(
                "SELECT owner FROM partitions WHERE grp = ? AND owner IS NOT NULL "
                "AND expires_at IS NOT NULL AND expires_at > ?",
                (group, now),
            )
        }
    )
    if held and not force:
        raise PartitionsHeld(group, held)
    conn.execute(
        "UPDATE partitions SET position = ?, epoch = epoch + 1, owner = NULL, "
        "expires_at = NULL WHERE grp = ?",
        (position, group),
    )
    return list_partitions(group, conn, now)


def list_partitions(
    group: str | None, conn: sqlite3.Connection, now: float
) -> list[PartitionLease]:
    """Every partition of ``group`` (or of all groups)."""
    if group is None:
        rows = conn.execute(
            f"SELECT {_LEASE_COLUMNS} FROM partitions ORDER BY grp, partition"
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_LEASE_COLUMNS} FROM partitions WHERE grp = ? ORDER BY partition",
            (group,),
        ).fetchall()
    return [_lease(row, now) for row in rows]


def acquire_slot(
    group: str, holder: str, owner: str, limit: int, conn: sqlite3.Connection, now: float
) -> bool:
    """Take a slot of ``group`` unless ``limit`` live ones are held (the write lock makes the
    count and the insert one step); slots of owners no longer registered are dropped first."""
    conn.execute(
        "DELETE FROM slots WHERE grp = ? AND owner NOT IN "
        "(SELECT worker_id FROM workers WHERE expires_at > ?)",
        (group, now),
    )
    moved = conn.execute(
        "UPDATE slots SET owner = ? WHERE grp = ? AND holder = ?", (owner, group, holder)
    )
    if moved.rowcount:
        return True
    taken = conn.execute("SELECT count(*) FROM slots WHERE grp = ?", (group,)).fetchone()[0]
    if taken >= limit:
        return False
    conn.execute("INSERT INTO slots (grp, holder, owner) VALUES (?, ?, ?)", (group, holder, owner))
    return True


def release_slot(group: str, holder: str, conn: sqlite3.Connection, now: float) -> None:
    """Delete ``holder``'s slot of ``group``."""
    conn.execute("DELETE FROM slots WHERE grp = ? AND holder = ?", (group, holder))


def fenced_out(
    lease: LeaseCheckpoint, fences: dict[tuple[str, int], tuple[str, int]]
) -> LeaseLost | None:
    """Why ``lease`` may not write, given ``(group, partition) -> (owner, epoch)`` as
    stored now; None when its owner still holds that epoch."""
    held = fences.get((lease.group, lease.partition))
    if held is None:
        return LeaseLost(lease.group, lease.partition, "no such partition")
    if held != (lease.owner, lease.epoch):
        return LeaseLost(lease.group, lease.partition, f"now at epoch {held[1]}")
    return None


def save_checkpoints(
    leases: Sequence[LeaseCheckpoint], conn: sqlite3.Connection, now: float
) -> list[LeaseLost | None]:
    """Move each lease's partition to its position where its owner still holds that epoch:
    one query per group for the fences, one statement for the moves (see
    :meth:`~contexten.store.base.EventStore.save_checkpoints`)."""
    fences: dict[tuple[str, int], tuple[str, int]] = {}
    for group in {lease.group for lease in leases}:
        for number, owner, epoch in conn.execute(
            "SELECT partition, owner, epoch FROM partitions WHERE grp = ?", (group,)
        ):
            fences[(group, number)] = (owner, epoch)
    outcomes = [fenced_out(lease, fences) for lease in leases]
    conn.executemany(
        "UPDATE partitions SET position = ? WHERE grp = ? AND partition = ?",
        [
            (lease.position, lease.group, lease.partition)
            for lease, lost in zip(leases, outcomes, strict=True)
            if lost is None
        ],
    )
    return outcomes
