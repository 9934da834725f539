"""One subscription's consumer: tail the log, deliver its partitions in order, checkpoint.

How it keeps the delivery guarantees:

* **Partitions.** The subscription's events are split into fixed partitions by a hash of
  their ordering key (see :mod:`contexten.bus.partitions`). This consumer delivers only the
  partitions its worker holds by lease; each has its own checkpoint, stored with the lease.
* **At least once.** The reader reads the global log from the lowest position any owned
  partition still needs. Every matching entry of an owned partition goes into that
  partition's ``pending`` queue in log order and is done when its handler succeeded or it
  was parked. A partition's checkpoint only advances over the contiguous done prefix of its
  queue, so after a crash (or a failover) exactly its entries from the first unfinished one
  on are read again.
* **Fencing.** Checkpoints are saved, and handlers' emits and dead letters stored, with a
  fence naming the partition's owner and epoch: once another worker took the partition, this
  one can write nothing for it (:class:`~contexten.exceptions.LeaseLost`); its deliveries of
  that partition are dropped unacknowledged, for the new owner to make.
* **Order per key, parallel across keys.** Deliveries with an ordering key queue in that key's
  *lane*; only one worker task works on a lane at a time, taking its deliveries in log order.
  Deliveries without a key are lanes of their own. At most ``concurrency`` tasks exist.
* **Backpressure.** The reader stops reading once ``max_buffered`` entries are pending and
  resumes when half of them are done.
* **Wake-up on commit.** When caught up, the reader awaits ``store.wait_for_new`` (no polling
  in process).
* **Checkpoints are batched**: saved at most every ``checkpoint_interval`` seconds by a
  separate loop (one fenced commit per moved partition, group-committed together), and once
  more when the consumer stops or hands a partition back.

The reader and the checkpoint loop run under the :class:`~contexten.resilience.Supervisor`:
if one crashes (the store went away for a moment), it is restarted with backoff and carries
on from where it was.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from contexten.bus.dead_letters import DEAD_LETTER_STREAM_PREFIX, REDRIVEN
from contexten.bus.delivery import Abandoned, Deliverer, Delivery
from contexten.bus.partitions import (
    LeaseSettings,
    PartitionLost,
    fair_share,
    members,
    partition_of,
)
from contexten.bus.timing import DurationSnapshot
from contexten.bus.watchdog import WorkerSlot
from contexten.exceptions import AppNotRunning, ConfigurationError
from contexten.observability.logging import get_logger
from contexten.resilience.supervisor import Supervisor, TaskState
from contexten.store.base import (
    EventStore,
    LeaseCheckpoint,
    PartitionLease,
    RecordedEvent,
    WorkerInfo,
    is_system_stream,
)

__all__ = ["Consumer", "ConsumerState", "ConsumerStatus"]

_HAND_BACK_SECONDS = 60.0
"""A partition being handed back finishes the deliveries it started for up to this long (or
three lease times, if longer): a hot key whose lane lags far behind the partition's other
keys can take a while, and only past this limit may the next owner repeat some of them."""


class ConsumerState(enum.Enum):
    """Where a subscription's consumer is."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    """Its reader crashed and waits to be restarted."""
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    """A snapshot of one subscription's progress in this process.

    Attributes:
        name: the subscription.
        state: running, restarting, stopped...
        position: every log entry up to here is done in the partitions held here (the
            in-memory checkpoint).
        checkpoint: the lowest checkpoint saved in the store for the partitions held here.
        fetched: the last log position read.
        pending: entries read and not yet done (in flight, waiting for their key, retrying).
        handled: deliveries completed since start.
        failed_attempts: handler attempts that failed since start.
        parked: deliveries parked in the dead-letter queue since start.
        restarts: how often the reader or checkpoint loop was restarted after a crash.
        durations: how long handler attempts took.
        partitions: the partitions this process holds (of ``partition_count``).
        partition_count: the subscription's partitions in all.
    """

    name: str
    state: ConsumerState
    position: int
    checkpoint: int
    fetched: int
    pending: int
    handled: int
    failed_attempts: int
    parked: int
    restarts: int
    durations: DurationSnapshot = field(default_factory=DurationSnapshot)
    partitions: tuple[int, ...] = ()
    partition_count: int = 0


class _Part:
    """A partition this consumer holds: its epoch, reading progress and pending deliveries."""

    __slots__ = (
        "epoch",
        "fetched",
        "finish_to",
        "inflight",
        "number",
        "pending",
        "release_by",
        "releasing",
        "saved",
        "started_to",
    )

    def __init__(self, number: int, epoch: int, position: int) -> None:
        self.number = number
        self.epoch = epoch
        self.fetched = position
        """Every entry up to here was examined for this partition."""
        self.saved = position
        self.pending: deque[Delivery] = deque()
        self.releasing = False
        """Being handed back: nothing new is read for it, and of what was read only the
        entries up to :attr:`finish_to` are still delivered, so that the checkpoint saved
        at release covers everything done here (the next owner starts from the checkpoint:
        an entry done beyond it would run twice). Later entries are left undone."""
        self.started_to = 0
        """The highest position whose delivery started here."""
        self.finish_to = 0
        """Being handed back: the entries up to here are finished before the release (the
        highest started when the hand-back began; nothing beyond it starts any more)."""
        self.release_by = 0.0
        """Loop time after which a partition being handed back starts nothing more and is
        released as soon as nothing is in flight (a lane stuck retrying must not keep a
        joining worker waiting for ever; what was not started goes to the next owner)."""
        self.inflight = 0
        """Deliveries whose handler is running (or retrying)."""

    @property
    def position(self) -> int:
        """Every entry of this partition up to here is done."""
        return self.pending[0].position - 1 if self.pending else self.fetched

    def overdue(self, now: float) -> bool:
        """Whether it is being handed back and its time to finish what was read is up."""
        return self.releasing and now >= self.release_by

    def releasable(self, now: float) -> bool:
        """Whether it is being handed back and can be released now: nothing in flight, and
        every entry up to :attr:`finish_to` done (or its time is up)."""
        return (
            self.releasing
            and not self.inflight
            and (self.position >= self.finish_to or self.overdue(now))
        )

    def release(self, by: float) -> None:
        """Begin handing it back: finish what is needed by loop time ``by``, start no more."""
        self.releasing = True
        self.release_by = by
        self.finish_to = self.started_to


class Consumer:
    """Delivers one subscription's events; see the module docstring for the guarantees.

    Args:
        deliverer: runs each delivery (handler, retries, parking).
        store: the open event store to tail.
        supervisor: runs the reader and checkpoint loops.
        worker_id: this process's worker (the owner its leases name).
        leases: partitions per subscription, lease and heartbeat times.
        batch_size: log entries read per query.
        max_buffered: entries read ahead of the checkpoint at most (default: 10 x concurrency,
            at least 1,000).
        checkpoint_interval: seconds between checkpoint saves, at most.
    """

    def __init__(
        self,
        deliverer: Deliverer,
        store: EventStore,
        *,
        supervisor: Supervisor,
        worker_id: str,
        leases: LeaseSettings | None = None,
        batch_size: int = 500,
        max_buffered: int | None = None,
        checkpoint_interval: float = 0.05,
    ) -> None:
        sub = deliverer.subscription
        leases = leases or LeaseSettings()
        self.subscription = sub
        self.deliverer = deliverer
        self.state = ConsumerState.STARTING
        self._store = store
        self._supervisor = supervisor
        self._worker_id = worker_id
        self._group = sub.checkpoint_name
        self._count_partitions = leases.partitions
        self._lease = leases.lease
        self._heartbeat = leases.heartbeat
        self._batch_size = batch_size
        self._max_buffered = max_buffered or max(1000, 10 * sub.concurrency)
        self._resume_at = self._max_buffered // 2
        self._checkpoint_interval = checkpoint_interval
        self._name = sub.name
        self._reader_task = f"dispatch:{sub.name}:reader"
        self._checkpoint_task = f"dispatch:{sub.name}:checkpoint"
        self._fetched = 0
        self._parts: dict[int, _Part] = {}
        self._reading: set[_Part] = set()
        self._count = 0
        self._changed = asyncio.Event()
        self._draining = False
        self._handing = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, deque[Delivery]] = {}
        self._ready: deque[Delivery | str] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._waking = 0
        self._workers: set[asyncio.Task[None]] = set()
        self._space = asyncio.Event()
        self._space.set()
        self._dirty = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._stopping = False
        self._log = get_logger("contexten.dispatcher", subscription=sub.name)
        deliverer.owner = self

    @property
    def group(self) -> str:
        """The name the subscription's partitions are stored under."""
        return self._group

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, held: Sequence[PartitionLease], live: Sequence[WorkerInfo]) -> None:
        """Create the subscription's partitions if new, take a fair share of them, and start
        the reader and checkpoint loops.

        A subscription that existed before partitions did (a single ``sub:{name}``
        checkpoint) starts every partition from that checkpoint, so nothing is delivered
        twice across the upgrade.

        Raises:
            ConfigurationError: the store holds the subscription with another partition count.
        """
        sub = self.subscription
        position = await self._store.get_checkpoint(sub.checkpoint_name)
        if position is None and sub.previous_names:
            position = await self._inherited_position()
        if position is None:
            position = await self._store.head() if sub.start == "now" else 0
        count = await self._store.ensure_partitions(
            self._group, self._count_partitions, position=position
        )
        if count != self._count_partitions:
            raise ConfigurationError(
                f"subscription {sub.name!r} has {count} partitions in the store, not "
                f"{self._count_partitions}; the count is fixed once a subscription exists "
                "(set CONTEXTEN_PARTITIONS to match)"
            )
        await self.rebalance(held, live)
        self._supervisor.start(self._reader_task, self._read_loop)
        self._supervisor.start(self._checkpoint_task, self._checkpoint_loop)
        self.state = ConsumerState.RUNNING
        self._log.debug("subscription started", partitions=sorted(self._parts))

    async def _inherited_position(self) -> int | None:
        """Where the subscription left off under a previous name, if it is new under this one.

        The lowest partition checkpoint of the first previous name that has partitions (or
        its single pre-partition checkpoint): events after it may be delivered again, none
        is skipped.
        """
        if await self._store.partitions(self._group):
            return None  # already known under this name
        for old in self.subscription.previous_names:
            group = f"sub:{old}"  # as Subscription.checkpoint_name
            parts = await self._store.partitions(group)
            position = (
                min(p.position for p in parts) if parts else await self._store.get_checkpoint(group)
            )
            if position is not None:
                self._log.warning(
                    "subscription renamed: continuing from its previous name",
                    previous=old,
                    position=position,
                )
                return position
        return None

    async def stop(self, grace: float) -> None:
        """Stop: no more reading; in-flight handlers get ``grace`` seconds to finish, the rest
        are cancelled without being acknowledged; then the checkpoints are saved and the
        partitions handed back, for the other workers to take at once."""
        if self.state in (ConsumerState.STOPPING, ConsumerState.STOPPED):
            return
        self.state = ConsumerState.STOPPING
        self._stopping = True
        self._draining = True
        self.deliverer.stopping = True
        await self._supervisor.stop(self._reader_task)
        self.deliverer.interrupt_pauses()
        for fut in self._idle:
            if not fut.done():
                self._waking += 1
                fut.set_result(None)
        self._idle.clear()
        if self._workers:
            _, late = await asyncio.wait(set(self._workers), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                self._log.warning(
                    "handlers cancelled at shutdown; they will be redelivered", count=len(late)
                )
        await self._supervisor.stop(self._checkpoint_task)
        self.deliverer.close()
        try:
            await self._save()
            numbers = sorted(self._parts)
            if numbers:
                await self._store.release_partitions(self._group, self._worker_id, numbers)
        except Exception as e:
            self._log.error(
                "could not save the checkpoints or release the partitions at shutdown; "
                "their leases will lapse",
                exc_info=e,
            )
        self._parts.clear()
        self.state = ConsumerState.STOPPED
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(AppNotRunning(f"subscription {self._name!r} stopped"))
        self._waiters.clear()

    # -- partitions -------------------------------------------------------------------------

    def _add_part(self, lease: PartitionLease) -> None:
        self._parts[lease.partition] = _Part(lease.partition, lease.epoch, lease.position)
        self._changed.set()

    def _drop_part(self, number: int) -> None:
        """Forget partition ``number`` (lost or released): its undone deliveries are dropped
        when their turn comes, unacknowledged, for the next owner to make."""
        part = self._parts.pop(number, None)
        if part is None:
            return
        self._count -= len(part.pending)
        part.pending.clear()
        self._progressed()

    def owns(self, d: Delivery) -> bool:
        """Whether ``d``'s partition is still this consumer's, under the same epoch."""
        part = self._parts.get(d.partition)
        return part is not None and part.epoch == d.epoch

    def fence(self, d: Delivery) -> LeaseCheckpoint | None:
        """The fence ``d``'s writes (emits, dead letters) carry."""
        return LeaseCheckpoint(self._group, d.partition, self._worker_id, d.epoch)

    async def rebalance(self, held: Sequence[PartitionLease], live: Sequence[WorkerInfo]) -> None:
        """Bring the partitions this consumer holds to its fair share (one heartbeat's work).

        ``held`` is what the store says this worker holds (all groups), ``live`` the live
        workers. Partitions lost to another worker are dropped; extra ones are handed back
        once their in-flight deliveries are done; missing ones are claimed.
        """
        held_here = {p.partition: p for p in held if p.group == self._group}
        for number, part in list(self._parts.items()):
            lease = held_here.get(number)
            if lease is None or lease.epoch != part.epoch:
                self._log.warning("partition lost to another worker", partition=number)
                self._drop_part(number)
        if self._draining:
            target = 0
        else:
            others = [w for w in members(live, self._group) if w.worker_id != self._worker_id]
            target = fair_share(self._count_partitions, len(others) + 1)
        active = sorted(n for n, p in self._parts.items() if not p.releasing)
        if len(active) > target:
            # Time to finish what was started: generous (a hot key's lane may lag far
            # behind), bounded (a lane stuck retrying must not keep the partition for ever).
            limit = max(_HAND_BACK_SECONDS, 3 * self._lease)
            release_by = asyncio.get_running_loop().time() + limit
            for number in active[target:]:
                self._parts[number].release(release_by)
            self._changed.set()
        elif len(active) < target:
            claimed = await self._store.claim_partitions(
                self._group, self._worker_id, limit=target - len(active), ttl=self._lease
            )
            for lease in claimed:
                self._add_part(lease)
            if claimed:
                self._log.info("partitions claimed", partitions=[p.partition for p in claimed])
        await self._hand_back()

    async def _hand_back(self) -> None:
        """Release the partitions being handed back that have nothing in flight."""
        async with self._handing:
            now = asyncio.get_running_loop().time()
            ready = [p for p in self._parts.values() if p.releasable(now)]
            if not ready:
                return
            await self._save_parts(ready)
            numbers = [p.number for p in ready if self._parts.get(p.number) is p]
            await self._store.release_partitions(self._group, self._worker_id, numbers)
            for number in numbers:
                self._drop_part(number)
            if numbers:
                self._log.info("partitions handed back", partitions=numbers)

    async def _hand_back_logged(self) -> None:
        try:
            await self._hand_back()
        except Exception as e:  # the next heartbeat tries again
            self._log.warning("handing partitions back failed", error_type=type(e).__name__)

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        store = self._store
        while not self._stopping:
            if self._count >= self._max_buffered:
                self._space.clear()
                await self._space.wait()
                continue
            active = [p for p in self._parts.values() if not p.releasing]
            if not active:
                self._changed.clear()
                await self._changed.wait()
                continue
            cursor = min(p.fetched for p in active)
            self._changed.clear()
            # Only the partitions held when the batch was read take its records: one claimed
            # meanwhile starts from its own checkpoint on the next pass.
            self._reading = set(active)
            records = await store.read_all(after=cursor, limit=self._batch_size)
            if not records:
                await self._wait_for_new(cursor)
                continue
            for rec in records:
                if self.stopping:
                    return
                await self._accept(rec)
            last = records[-1].position
            for part in self._reading:
                if (
                    self._parts.get(part.number) is part
                    and not part.releasing
                    and part.fetched < last
                ):
                    part.fetched = last
                    if not part.pending:
                        self._progressed()
            self._fetched = max(self._fetched, last)
            # Let workers run even when the store answers without suspending.
            await asyncio.sleep(0)

    async def _wait_for_new(self, after: int) -> None:
        """Wait for the log to grow past ``after``, or for the partitions held to change."""
        waiting = asyncio.ensure_future(self._store.wait_for_new(after, timeout=5.0))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((waiting, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (waiting, changed):
                if not fut.done():
                    fut.cancel()
            await asyncio.wait((waiting, changed))
        if waiting.done() and not waiting.cancelled():
            waiting.result()  # a store error surfaces (and the supervisor restarts us)

    async def _accept(self, rec: RecordedEvent) -> None:
        """Queue ``rec`` for delivery if it matches and belongs to an owned partition."""
        sub = self.subscription
        event = rec.event
        letter_id: str | None = None
        if is_system_stream(rec.stream):
            if (
                event.type == REDRIVEN
                and event.data.get("subscription") == self._name
                and rec.stream.startswith(DEAD_LETTER_STREAM_PREFIX)
            ):
                event_id = str(event.data.get("event_id"))
                original = await self._store.get_event(event_id)
                if original is None:
                    self._log.error("redriven event not found in the store", event_id=event_id)
                    return
                self._queue(rec.position, original, letter_id=event.data.get("letter_id"))
                return
            if not sub.include_system:
                return
        if not sub.type_matches(event.type):
            return
        check_where = False
        if sub.where is not None:
            try:
                if not sub.where(event):
                    return
            except Exception:
                check_where = True  # re-run in the attempt, so the error is retried/parked
        self._queue(rec.position, rec, check_where=check_where, letter_id=letter_id)

    def _queue(
        self,
        position: int,
        rec: RecordedEvent,
        *,
        check_where: bool = False,
        letter_id: str | None = None,
    ) -> None:
        key = self._key(rec)
        number = partition_of(key if key is not None else rec.event.id, self._count_partitions)
        part = self._parts.get(number)
        if part is None or part not in self._reading or part.releasing or position <= part.fetched:
            return
        d = Delivery(
            position,
            rec.event,
            key,
            check_where=check_where,
            letter_id=letter_id,
            partition=number,
            epoch=part.epoch,
        )
        part.pending.append(d)
        part.fetched = position
        self._count += 1
        self._schedule(d)

    def _key(self, rec: RecordedEvent) -> str | None:
        try:
            return self.subscription.key_of(rec.event)
        except Exception as e:
            self._log.error(
                "ordering key function failed; delivering without ordering",
                event_id=rec.event.id,
                error_type=type(e).__name__,
            )
            return None

    # -- progress --------------------------------------------------------------------------

    def _done(self, d: Delivery) -> None:
        d.done = True
        part = self._parts.get(d.partition)
        if part is None or part.epoch != d.epoch:
            return
        pending = part.pending
        while pending and pending[0].done:
            pending.popleft()
            self._count -= 1
        self._progressed()

    def _local_position(self) -> int:
        """Every entry up to here is done in every partition this consumer holds."""
        if not self._parts:
            return self._fetched
        return min(p.position for p in self._parts.values())

    def _owns_all(self) -> bool:
        return len(self._parts) == self._count_partitions and not any(
            p.releasing for p in self._parts.values()
        )

    def _progressed(self) -> None:
        if not self._dirty.is_set():
            self._dirty.set()
        if not self._space.is_set() and self._count <= self._resume_at:
            self._space.set()
        if self._waiters and self._owns_all():
            acked = self._local_position()
            still = []
            for position, fut in self._waiters:
                if position <= acked:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((position, fut))
            self._waiters = still

    async def wait_until(self, position: int) -> None:
        """Return once every log entry up to ``position`` is done for this subscription, by
        whichever workers hold its partitions.

        Raises:
            AppNotRunning: the consumer stopped first.
        """
        while True:
            if self.state is ConsumerState.STOPPED:
                raise AppNotRunning(f"subscription {self._name!r} is stopped")
            if self._owns_all():
                if self._local_position() >= position:
                    return
                fut = asyncio.get_running_loop().create_future()
                self._waiters.append((position, fut))
                try:
                    async with asyncio.timeout(self._heartbeat):
                        await fut
                    return
                except TimeoutError:
                    continue  # the partitions held may have changed meanwhile
            parts = await self._store.partitions(self._group)
            done = [p.position for p in parts if p.partition not in self._parts]
            done.extend(p.position for p in self._parts.values())
            if done and min(done) >= position:
                return
            await asyncio.sleep(0.05)

    async def _checkpoint_loop(self) -> None:
        self._dirty.set()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._save()
            await asyncio.sleep(self._checkpoint_interval)

    async def _save(self) -> None:
        await self._save_parts(list(self._parts.values()))

    async def _save_parts(self, parts: Sequence[_Part]) -> None:
        """Save the moved checkpoints of ``parts``, each fenced by its epoch, in one store
        call (a store error raises: none is marked saved, the next round saves them again)."""
        moved = [(p, p.position) for p in parts if p.position > p.saved]
        if not moved:
            return
        outcomes = await self._store.save_checkpoints(
            [
                LeaseCheckpoint(self._group, p.number, self._worker_id, p.epoch, position)
                for p, position in moved
            ]
        )
        for (part, position), lost in zip(moved, outcomes, strict=True):
            if lost is not None:
                if self._parts.get(part.number) is part:
                    self._log.warning("partition lost to another worker", partition=part.number)
                    self._drop_part(part.number)
            else:
                part.saved = max(part.saved, position)

    async def flush(self) -> None:
        """Return once the checkpoints, as they stand now, are saved.

        While the consumer runs, its checkpoint loop does the saving (and is restarted if
        the store fails it), so this waits for that loop rather than racing it.
        """
        if self._checkpoint_task not in self._supervisor or self._stopping:
            await self._save()
            return
        targets = {p: p.position for p in self._parts.values()}
        while any(self._parts.get(p.number) is p and p.saved < t for p, t in targets.items()):
            self._dirty.set()
            await asyncio.sleep(self._checkpoint_interval)

    # -- workers ---------------------------------------------------------------------------

    def _schedule(self, d: Delivery) -> None:
        key = d.key
        if key is None:
            self._ready.append(d)
        else:
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append(d)
                return
            self._lanes[key] = deque((d,))
            self._ready.append(key)
        self._kick()

    def _kick(self) -> None:
        """Make sure some worker is on its way for each ready lane (up to concurrency)."""
        if len(self._ready) <= self._waking or self._stopping:
            return
        if self._idle:
            self._waking += 1
            self._idle.popleft().set_result(None)
        elif len(self._workers) < self.subscription.concurrency:
            self._waking += 1
            task = asyncio.get_running_loop().create_task(
                self._worker(), name=f"dispatch:{self._name}:worker"
            )
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        ready = self._ready
        lanes = self._lanes
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        slot = self.deliverer.watch(task)
        try:
            while True:
                self._waking -= 1
                while ready and not self._stopping:
                    entry = ready.popleft()
                    if isinstance(entry, Delivery):
                        await self._run(entry, slot)
                    else:
                        lane = lanes[entry]
                        await self._run(lane[0], slot)
                        lane.popleft()
                        if lane:
                            ready.append(entry)
                            self._kick()
                        else:
                            del lanes[entry]
                if self._stopping:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._idle.append(fut)
                await fut
        except Abandoned:
            return
        finally:
            self.deliverer.unwatch(slot)

    async def _run(self, d: Delivery, slot: WorkerSlot) -> None:
        """Deliver ``d`` and mark it done; only shutdown or a lost partition leave it undone."""
        part = self._parts.get(d.partition)
        if part is None or part.epoch != d.epoch:
            return  # its partition moved on: the next owner has it
        if part.releasing and (
            d.position > part.finish_to or part.overdue(asyncio.get_running_loop().time())
        ):
            return  # being handed back and not needed (or out of time): the next owner has it
        part.inflight += 1
        part.started_to = max(part.started_to, d.position)
        try:
            await self._run_owned(d, slot)
        finally:
            part.inflight -= 1
            self._hand_back_soon(part)

    def _hand_back_soon(self, part: _Part) -> None:
        """Release ``part`` now if it is being handed back and its last delivery ended."""
        if part.releasable(asyncio.get_running_loop().time()) and not self._stopping:
            task = asyncio.get_running_loop().create_task(self._hand_back_logged())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run_owned(self, d: Delivery, slot: WorkerSlot) -> None:
        while True:
            if not self.owns(d):
                return  # its partition moved on: the new owner delivers it
            try:
                await self.deliverer.deliver(d, slot)
            except (Abandoned, asyncio.CancelledError):
                raise
            except PartitionLost:
                self._log.info(
                    "delivery dropped: its partition moved to another worker",
                    partition=d.partition,
                    event_id=d.event.id if d.event else None,
                )
                if self.owns(d):  # the store said so before our heartbeat did
                    self._drop_part(d.partition)
                return
            except Exception as e:  # a bug in the machinery, not the handler: keep the event
                self._log.error(
                    "delivery failed unexpectedly; trying again",
                    event_id=d.event.id if d.event else None,
                    exc_info=e,
                )
                await self.deliverer.pause(1.0)
                continue
            self._done(d)
            return

    # -- status ----------------------------------------------------------------------------

    def status(self) -> ConsumerStatus:
        """A snapshot of this subscription's progress."""
        state = self.state
        restarts = 0
        for task in (self._reader_task, self._checkpoint_task):
            if task in self._supervisor:
                st = self._supervisor.status(task)
                restarts += st.restarts
                if st.state is TaskState.BACKING_OFF and state is ConsumerState.RUNNING:
                    state = ConsumerState.RESTARTING
        stats = self.deliverer.stats
        parts = list(self._parts.values())
        return ConsumerStatus(
            name=self._name,
            state=state,
            position=self._local_position(),
            checkpoint=min((p.saved for p in parts), default=self._fetched),
            fetched=self._fetched,
            pending=sum(1 for p in parts for d in p.pending if not d.done),
            handled=stats.handled,
            failed_attempts=stats.failed_attempts,
            parked=stats.parked,
            restarts=restarts,
            durations=stats.durations.snapshot(),
            partitions=tuple(sorted(self._parts)),
            partition_count=self._count_partitions,
        )

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun."""
        return self._stopping

    @property
    def position(self) -> int:
        """Every log entry up to here is done in the partitions held here."""
        return self._local_position()

    def __repr__(self) -> str:
        return (
            f"Consumer({self._name!r}, partitions={len(self._parts)}, "
            f"position={self._local_position()}, state={self.state.value})"
        )
