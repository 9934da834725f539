"""The event-store port: append-only streams plus one gapless global log.

The event store is Contexten's only source of truth. Everything else (dispatch checkpoints
aside, which are tracking records) is derived from it and can be rebuilt.

Semantics every backend must keep (checked by ``contexten.testing.conformance``):

* **Streams and versions.** A stream's version is the number of events in it (0: no stream).
  An append states what it expects: an exact version, :attr:`StreamState.NO_STREAM`,
  :attr:`StreamState.STREAM_EXISTS` or :attr:`StreamState.ANY`. A wrong expectation raises
  :class:`~contexten.exceptions.WrongExpectedVersion` and writes nothing of the commit.
* **Atomic commits.** :meth:`EventStore.commit` writes several streams' appends, a dedup key
  and a checkpoint in ONE transaction: all of it or none of it.
* **The global log.** Every event gets a position; positions are gapless (1, 2, 3...) and follow
  commit order, so a reader tailing with :meth:`read_all` never skips an event.
* **Dedup.** A commit carrying a ``dedup_key`` that was committed before writes nothing and
  returns the original results with ``deduplicated=True``.
* **Waiting.** :meth:`wait_for_new` returns as soon as the log grows past a position: at once
  after a commit in this process, within ~100 ms after a commit in another process.
* **As of.** Reads take ``as_of`` to see the stream or log as it was at a time.
* **Workers and leases.** Processes sharing a store register as workers with a heartbeat and
  hold a subscription's partitions by lease (owner, epoch, deadline). Every time is taken
  from the store's own clock (the database server's; for SQLite, the machine's), never from
  the workers'. Claiming a partition bumps its epoch; a commit that carries a
  :class:`LeaseCheckpoint` is written only while that owner still holds that epoch
  (fencing), else it raises :class:`~contexten.exceptions.LeaseLost` and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Final, Self

from contexten.events.envelope import Event
from contexten.exceptions import LeaseLost, WrongExpectedVersion

__all__ = [
    "SYSTEM_STREAM_PREFIX",
    "Append",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "HeadNotifier",
    "LeaseCheckpoint",
    "PartitionLease",
    "RecordedEvent",
    "StreamInfo",
    "StreamState",
    "WorkerInfo",
    "check_append",
    "check_checkpoint",
    "check_expected_version",
    "check_lease_checkpoint",
    "check_saved_position",
    "is_system_stream",
]


SYSTEM_STREAM_PREFIX: Final = "$"
"""Streams whose name starts with this hold Contexten's own bookkeeping (dead letters,
workflow internals, audit, retention): subscriptions skip them unless they set
``include_system=True``, and retention never prunes them."""


def is_system_stream(stream: str) -> bool:
    """Whether ``stream`` is one of Contexten's own (``$``-prefixed) streams."""
    return stream.startswith(SYSTEM_STREAM_PREFIX)


class StreamState(enum.Enum):
    """Expectations about a stream that are not an exact version."""

    ANY = "any"
    """Append whatever the stream's version."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (version 0)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must already hold at least one event."""

    def __str__(self) -> str:
        return self.value


ExpectedVersion = int | StreamState
"""An exact stream version (0 means no stream) or a :class:`StreamState`."""


@dataclass(frozen=True, slots=True)
class Append:
    """Events to add to one stream, with the caller's expectation of that stream."""

    stream: str
    events: Sequence[Event]
    expected_version: ExpectedVersion = StreamState.ANY


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed.

    ``version`` is the stream's version after the append; ``first_position`` and
    ``last_position`` span the appended events in the global log (both 0 for an empty append).
    """

    stream: str
    version: int
    first_position: int
    last_position: int
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: the domain event plus where and when the store put it."""

    position: int
    stream: str
    version: int
    recorded_at: datetime
    event: Event


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's name and current version."""

    stream: str
    version: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A registered worker process, as the store sees it.

    Attributes:
        worker_id: unique per process run (``host/pid/random``).
        groups: the subscriptions it takes part in (shares partitions of).
        meta: free text the worker describes itself with (host, pid, command).
        started_at: when it registered (store clock).
        heartbeat_at: its last heartbeat (store clock).
        heartbeat_age: seconds since then, by the store's clock.
        expires_in: seconds until it counts as dead unless it beats again (negative: dead).
        draining: it is shutting down and handing its partitions back.
    """

    worker_id: str
    groups: tuple[str, ...]
    meta: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    expires_in: float
    draining: bool = False

    @property
    def alive(self) -> bool:
        """Whether its registration has not expired."""
        return self.expires_in > 0


@dataclass(frozen=True, slots=True)
class PartitionLease:
    """One partition of a subscription: who holds it, under which epoch, and its checkpoint.

    Attributes:
        group: the subscription.
        partition: 0 .. count - 1.
        owner: the worker holding the lease, or None (free).
        epoch: bumped at every claim; fenced writes name it.
        position: the partition's checkpoint: every event of this partition up to here is done.
        expires_in: seconds left on the lease by the store's clock (negative: expired; None:
            free).
    """

    group: str
    partition: int
    owner: str | None
    epoch: int
    position: int
    expires_in: float | None

    @property
    def held(self) -> bool:
        """Whether someone holds an unexpired lease on it."""
        return self.owner is not None and self.expires_in is not None and self.expires_in > 0


@dataclass(frozen=True, slots=True)
class LeaseCheckpoint:
    """A fence for :meth:`EventStore.commit`: write only while ``owner`` holds ``epoch``.

    With a ``position``, the partition's checkpoint moves there in the same transaction as
    the commit's appends; without one, the fence only guards the appends (a handler's emits).
    """

    group: str
    partition: int
    owner: str
    epoch: int
    position: int | None = None


def check_saved_position(lease: LeaseCheckpoint) -> None:
    """Raise unless ``lease`` is well formed and names a position (to save a checkpoint)."""
    check_lease_checkpoint(lease)
    if lease.position is None:
        raise ValueError("saving a checkpoint needs the lease's position")


def check_lease_checkpoint(lease: LeaseCheckpoint) -> None:
    """Raise :class:`TypeError`/:class:`ValueError` unless ``lease`` is well formed."""
    if not isinstance(lease, LeaseCheckpoint):
        raise TypeError(f"lease must be a LeaseCheckpoint, got {lease!r}")
    if not isinstance(lease.group, str) or not lease.group:
        raise ValueError("a lease names a non-empty group")
    if not isinstance(lease.owner, str) or not lease.owner:
        raise ValueError("a lease names a non-empty owner")
    for what, value in (("partition", lease.partition), ("epoch", lease.epoch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"a lease's {what} must be an int >= 0, got {value!r}")
    if lease.position is not None and (
        not isinstance(lease.position, int) or isinstance(lease.position, bool)
    ):
        raise TypeError(f"a lease's position must be an int, got {lease.position!r}")


def check_expected_version(stream: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`WrongExpectedVersion` unless ``actual`` satisfies ``expected``."""
    if expected is StreamState.ANY:
        return
    if expected is StreamState.NO_STREAM:
        ok = actual == 0
    elif expected is StreamState.STREAM_EXISTS:
        ok = actual > 0
    elif isinstance(expected, int) and not isinstance(expected, bool):
        if expected < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected}")
        ok = actual == expected
    else:
        raise TypeError(f"expected_version must be an int or StreamState, got {expected!r}")
    if not ok:
        raise WrongExpectedVersion(stream, expected, actual)


def check_append(append: Append) -> None:
    """Raise unless ``append`` names a stream and states a valid expectation.

    The durable backends check this on the caller's side, before queueing the write.

    Raises:
        TypeError: ``expected_version`` is neither an int nor a :class:`StreamState`.
        ValueError: a negative ``expected_version``, or an empty or non-string stream name.
    """
    expected = append.expected_version
    if not isinstance(expected, StreamState) and (
        not isinstance(expected, int) or isinstance(expected, bool)
    ):
        raise TypeError(f"expected_version must be an int or StreamState, got {expected!r}")
    if isinstance(expected, int) and expected < 0:
        raise ValueError(f"expected_version must be >= 0, got {expected}")
    if not isinstance(append.stream, str) or not append.stream:
        raise ValueError(f"stream must be a non-empty string, got {append.stream!r}")


def check_checkpoint(checkpoint: tuple[str, int]) -> None:
    """Raise :class:`TypeError` unless ``checkpoint`` is a ``(name, position)`` pair."""
    name, position = checkpoint
    if not isinstance(name, str) or not isinstance(position, int):
        raise TypeError(f"checkpoint must be (name, position), got {checkpoint!r}")


@dataclass(eq=False)
class HeadNotifier:
    """Wakes waiters when the log's head moves; shared helper for backends.

    Backends call :meth:`advance` after each commit they make (and when they notice another
    process's commits); readers await :meth:`wait` instead of polling.
    """

    head: int = 0
    _waiters: list[asyncio.Future[int]] = field(default_factory=list)

    def advance(self, head: int) -> None:
        """Record that the log reaches ``head`` and wake everyone waiting below it."""
        if head <= self.head:
            return
        self.head = head
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(head)

    async def wait(self, after: int, timeout: float | None) -> int:
        """Wait until the head passes ``after`` or ``timeout`` elapses; return the head."""
        if self.head > after:
            return self.head
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return self.head
        finally:
            if not fut.done():
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def fail(self, error: BaseException) -> None:
        """Wake everyone waiting by raising ``error`` in them (e.g. the store was closed)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error)

    @property
    def has_waiters(self) -> bool:
        """Whether anyone is waiting (backends poll other processes only then)."""
        return bool(self._waiters)


class EventStore(ABC):
    """The port every event-store backend implements. Use it as an async context manager.

    Choose a backend by URL with :func:`contexten.store.open_store`; core code never imports
    a backend module.
    """

    url: str

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema. Idempotent."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release resources. Idempotent."""

    @abstractmethod
    async def commit(
        self,
        appends: Sequence[Append],
        *,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
        lease: LeaseCheckpoint | None = None,
    ) -> list[AppendResult]:
        """Write ``appends``, the ``dedup_key`` and a ``(name, position)`` checkpoint atomically.

        Returns one :class:`AppendResult` per append, in order. If ``dedup_key`` was committed
        before, nothing is written and the original results come back marked
        ``deduplicated=True``. Raises ``WrongExpectedVersion`` (nothing written) when an
        expectation fails and ``StoreUnavailable`` when the write could not be made durable.

        With a ``lease``, the commit is fenced: it is written only if ``lease.owner`` still
        holds the partition under ``lease.epoch`` (checked first, before dedup), and then
        also moves the partition's checkpoint to ``lease.position`` (if given). Otherwise it
        raises :class:`~contexten.exceptions.LeaseLost` and writes nothing.
        """

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: ExpectedVersion = StreamState.ANY,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
        lease: LeaseCheckpoint | None = None,
    ) -> AppendResult:
        """Append ``events`` to one ``stream`` atomically; see :meth:`commit`."""
        results = await self.commit(
            [Append(stream, list(events), expected_version)],
            dedup_key=dedup_key,
            checkpoint=checkpoint,
            lease=lease,
        )
        return results[0]

    async def save_checkpoints(self, leases: Sequence[LeaseCheckpoint]) -> list[LeaseLost | None]:
        """Move the checkpoints of several partitions, each fenced by its own lease.

        Each is what ``commit([], lease=lease)`` does alone, and this default does exactly
        that (group-committed); a backend may do them all in one transaction. Returns, in
        order, None for a checkpoint that moved and the :class:`~contexten.exceptions.
        LeaseLost` that refused one whose owner no longer holds that epoch (nothing else
        is refused for it).

        Raises:
            ValueError: a lease has no position.
            StoreError: they could not be written (some may have moved; saving the same
                positions again is safe).
        """
        for lease in leases:
            check_saved_position(lease)
        outcomes = await asyncio.gather(
            *(self.commit([], lease=lease) for lease in leases), return_exceptions=True
        )
        lost: list[LeaseLost | None] = []
        for outcome in outcomes:
            if isinstance(outcome, LeaseLost):
                lost.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                lost.append(None)
        return lost

    @abstractmethod
    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Events of ``stream`` from version ``from_version`` on, oldest first."""

    @abstractmethod
    async def read_all(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of the global log with positions above ``after``."""

    @abstractmethod
    async def read_all_backwards(
        self, *, before: int | None = None, limit: int = 100
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events below ``before`` (default: the head), newest first."""

    @abstractmethod
    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The stored event with id ``event_id``, or None."""

    async def get_events(self, event_ids: Sequence[str]) -> list[RecordedEvent]:
        """The stored events among ``event_ids``, in log order (unknown ids are left out).

        For pages that show many events by id (a work item's timeline): the SQL stores
        answer in one query rather than one per id; this default asks :meth:`get_event`.
        """
        found: dict[int, RecordedEvent] = {}
        for event_id in dict.fromkeys(event_ids):
            record = await self.get_event(event_id)
            if record is not None:
                found[record.position] = record
        return [found[p] for p in sorted(found)]

    @abstractmethod
    async def stream_version(self, stream: str) -> int:
        """The stream's current version (0: no stream)."""

    @abstractmethod
    async def list_streams(self, prefix: str = "", *, limit: int = 10_000) -> list[StreamInfo]:
        """Streams whose name starts with ``prefix``, in name order."""

    @abstractmethod
    async def head(self) -> int:
        """The position of the last committed event (0: empty log)."""

    @abstractmethod
    async def wait_for_new(self, after: int, timeout: float | None = None) -> int:
        """Wait until the log's head passes ``after`` (or ``timeout``); return the head."""

    @abstractmethod
    async def get_checkpoint(self, name: str) -> int | None:
        """The saved position of consumer ``name``, or None if it never saved one."""

    @abstractmethod
    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save consumer ``name``'s position (durably, on its own)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    # -- workers and partition leases ------------------------------------------------------

    @abstractmethod
    async def heartbeat(
        self,
        worker_id: str,
        *,
        ttl: float,
        groups: Sequence[str] | None = None,
        meta: str | None = None,
        draining: bool = False,
    ) -> list[PartitionLease]:
        """Register or renew worker ``worker_id`` and every partition lease it holds.

        The worker and its leases then expire ``ttl`` seconds from now by the store's clock.
        ``groups`` and ``meta`` replace what was recorded (None: keep it; empty for a new
        worker). Returns the partitions the worker holds after the renewal (all groups).
        """

    @abstractmethod
    async def remove_worker(self, worker_id: str) -> None:
        """Forget ``worker_id`` and free every partition it holds (a clean exit, or a worker
        known to be dead). Epochs are kept, so the next claim fences the old owner out."""

    @abstractmethod
    async def workers(self) -> list[WorkerInfo]:
        """Registered workers whose registration has not expired, by worker id."""

    @abstractmethod
    async def ensure_partitions(self, group: str, count: int, *, position: int) -> int:
        """Create partitions ``0 .. count - 1`` of ``group`` that are missing, each with the
        checkpoint ``position``; return how many partitions the group has (existing groups
        keep their count, so the caller can refuse a mismatch)."""

    @abstractmethod
    async def claim_partitions(
        self, group: str, worker_id: str, *, limit: int, ttl: float
    ) -> list[PartitionLease]:
        """Claim up to ``limit`` partitions of ``group`` that are free or whose lease expired.

        Each claimed partition gets ``worker_id`` as owner, its epoch bumped by one and a
        lease of ``ttl`` seconds. Concurrent claimers never get the same partition (on
        PostgreSQL: ``FOR UPDATE SKIP LOCKED``). Returns what this call claimed.
        """

    @abstractmethod
    async def release_partitions(
        self, group: str, worker_id: str, partitions: Sequence[int]
    ) -> None:
        """Free ``partitions`` of ``group`` that ``worker_id`` holds (others are untouched)."""

    @abstractmethod
    async def partitions(self, group: str | None = None) -> list[PartitionLease]:
        """Every partition (of ``group``, or of all groups), by group and number."""

    # -- concurrency slots -----------------------------------------------------------------

    @abstractmethod
    async def acquire_slot(self, group: str, holder: str, owner: str, *, limit: int) -> bool:
        """Take one of the ``limit`` slots of ``group`` for ``holder``, held by worker
        ``owner``; True if taken (or ``holder`` holds one already: it now names ``owner``).

        A slot counts only while its owner is a live worker of the registry
        (:meth:`heartbeat`): the slots of a worker whose registration lapsed or was removed
        are free again, so a dead process never keeps one. Concurrent acquirers, in any
        number of processes, never hold more than ``limit`` slots of a group together (each
        acquirer states its own ``limit``; the count is shared).
        """

    @abstractmethod
    async def release_slot(self, group: str, holder: str) -> None:
        """Give ``holder``'s slot of ``group`` back (nothing if it holds none)."""

    @abstractmethod
    async def reset_partitions(
        self, group: str, position: int, *, force: bool = False
    ) -> list[PartitionLease]:
        """Move the checkpoint of every partition of ``group`` to ``position``, in one
        transaction, and return the partitions as they are then (none: ``group`` has no
        partitions, nothing done).

        Each partition's epoch is bumped and its lease freed, so a worker that held one
        writes nothing more under it (its fenced commits raise
        :class:`~contexten.exceptions.LeaseLost`) and the next claim, its own at its next
        heartbeat or another's, starts from ``position``. Unless ``force``, a group with a
        partition under an unexpired lease is refused with
        :class:`~contexten.exceptions.PartitionsHeld` and nothing changes.
        """
