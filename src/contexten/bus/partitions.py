"""Partitions and leases: how many processes share one subscription safely.

The design the engines that do this well converge on (Kafka consumer groups, Hatchet's lease
rows claimed with ``SKIP LOCKED``, Marten's sharded async daemon):

* **Fixed partitions.** Each subscription's events are split into :attr:`LeaseSettings.partitions`
  partitions by a stable hash of the ordering key (:func:`partition_of`), so order per key is
  a property of one partition, which one worker at a time delivers.
* **Workers and leases.** Every dispatching process is a *worker*: it registers in the store and
  renews its registration and every lease it holds with one heartbeat (every
  :attr:`LeaseSettings.heartbeat` seconds; a lease lasts :attr:`LeaseSettings.lease` seconds by
  the store's clock). A partition has an owner, an epoch (bumped at each claim) and a lease
  deadline; a worker claims free or expired partitions.
* **Fair share.** A worker aims at ``ceil(partitions / live workers of the subscription)``
  partitions: it claims up to that, and when workers join it hands its extra partitions back
  cooperatively (it stops reading them, lets their in-flight deliveries finish, saves their
  checkpoints, then releases them). A draining worker (SIGTERM) aims at zero.
* **Fencing.** A partition's checkpoint moves only through a commit that names the owner and
  the epoch (:class:`~contexten.store.base.LeaseCheckpoint`), and handlers' emits carry the
  same fence; a worker that lost its lease (paused, partitioned, a zombie) gets
  :class:`~contexten.exceptions.LeaseLost` and writes nothing.
* **Failover.** A dead worker's leases lapse after :attr:`LeaseSettings.lease` seconds and the
  others claim its partitions at their next heartbeat, starting from each partition's
  checkpoint: only what the dead worker had in flight is delivered again. A worker on the same
  host whose process is gone is removed at once (its partitions are free immediately).

A single process needs nothing of this: it is the only live worker, so it owns every partition.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from contexten.exceptions import ConfigurationError
from contexten.settings import seconds_from_env
from contexten.store.base import EventStore, WorkerInfo

__all__ = [
    "DEFAULT_PARTITIONS",
    "LeaseSettings",
    "PartitionLost",
    "fair_share",
    "local_worker_gone",
    "members",
    "new_worker_id",
    "of_this_process",
    "partition_of",
    "subscription_checkpoint",
]

DEFAULT_PARTITIONS: Final = 64
_HOST: Final = socket.gethostname().replace("/", "_")


class PartitionLost(Exception):
    """This worker no longer owns the partition of a delivery: drop it unacknowledged.

    The partition's new owner delivers the event again from the partition's checkpoint.
    """


def partition_of(key: str, count: int) -> int:
    """The partition of ordering key ``key`` among ``count``: stable across processes, runs
    and machines (a BLAKE2b hash, never Python's salted ``hash``)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def fair_share(partitions: int, workers: int) -> int:
    """How many partitions each of ``workers`` live workers aims at."""
    return math.ceil(partitions / max(workers, 1))


def new_worker_id() -> str:
    """A fresh worker id for this process: ``host/pid/random``."""
    return f"{_HOST}/{os.getpid()}/{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_worker_gone(worker_id: str) -> bool:
    """Whether ``worker_id`` ran on this host in a process that no longer exists.

    Such a worker (killed with ``kill -9``, say) can be removed at once instead of waiting for
    its lease to lapse. Worker ids of other hosts, or of this process, are never gone here.
    """
    host, _, rest = worker_id.partition("/")
    pid_text = rest.partition("/")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


def of_this_process(worker_id: str) -> bool:
    """Whether ``worker_id`` was made by this very process (:func:`new_worker_id`)."""
    return worker_id.startswith(f"{_HOST}/{os.getpid()}/")


def members(workers: Sequence[WorkerInfo], group: str) -> list[WorkerInfo]:
    """The live, non-draining workers taking part in ``group``."""
    return [w for w in workers if w.alive and not w.draining and group in w.groups]


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """How subscriptions are split and shared among workers.

    Attributes:
        partitions: partitions per subscription, fixed when the subscription is first seen
            (changing it later is refused: the partitions already hold checkpoints).
        lease: seconds a lease lasts without renewal; a dead worker's partitions move to
            the others after at most about this long plus one heartbeat.
        heartbeat: seconds between heartbeats (renewals, rebalancing); well under ``lease``.
        reap_local: remove a worker of this host whose process is gone at once, rather than
            waiting for its lease to lapse.
    """

    partitions: int = DEFAULT_PARTITIONS
    lease: float = 10.0
    heartbeat: float = 2.0
    reap_local: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.partitions, int) or not 1 <= self.partitions <= 4096:
            raise ConfigurationError("partitions must be a whole number from 1 to 4096")
        if not self.heartbeat > 0 or not self.lease > 2 * self.heartbeat:
            raise ConfigurationError(
                f"the lease ({self.lease:g} s) must be more than twice the heartbeat "
                f"({self.heartbeat:g} s), and the heartbeat > 0"
            )

    @classmethod
    def from_env(cls) -> LeaseSettings:
        """Settings from ``CONTEXTEN_PARTITIONS``, ``CONTEXTEN_LEASE_SECONDS``,
        ``CONTEXTEN_HEARTBEAT_SECONDS`` and ``CONTEXTEN_REAP_LOCAL_WORKERS`` (``0`` to wait
        for the lease even for a dead process of this host), each optional."""
        raw = os.environ.get("CONTEXTEN_PARTITIONS") or str(DEFAULT_PARTITIONS)
        if not raw.isdigit():
            raise ConfigurationError(f"CONTEXTEN_PARTITIONS must be a whole number, got {raw!r}")
        return cls(
            partitions=int(raw),
            lease=seconds_from_env("CONTEXTEN_LEASE_SECONDS", 10.0),
            heartbeat=seconds_from_env("CONTEXTEN_HEARTBEAT_SECONDS", 2.0),
            reap_local=os.environ.get("CONTEXTEN_REAP_LOCAL_WORKERS", "1") != "0",
        )


async def subscription_checkpoint(store: EventStore, name: str) -> int | None:
    """Where subscription ``name`` stands: every log entry up to the returned position is
    done in all of its partitions (the lowest partition checkpoint); None if it never ran.

    A subscription that has not been partitioned yet answers its old single checkpoint.
    """
    group = f"sub:{name}"
    parts = await store.partitions(group)
    if parts:
        return min(p.position for p in parts)
    return await store.get_checkpoint(group)
