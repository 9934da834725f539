"""One subscription's consumer: tail the log, order by key, run handlers, checkpoint.

How it keeps the delivery guarantees:

* **At least once.** The consumer reads the global log from its checkpoint. Every entry it
  reads goes into ``pending`` in log order; an entry that does not match is done at once, a
  matching one when its handler succeeded or it was parked. The checkpoint only advances over
  the contiguous done prefix of ``pending``, so after a crash exactly the entries from the
  first unfinished one on are read again.
* **Order per key, parallel across keys.** Deliveries with an ordering key queue in that key's
  *lane*; only one worker works on a lane at a time, taking its deliveries in log order.
  Deliveries without a key are lanes of their own. At most ``concurrency`` workers exist.
  Workers are long-lived tasks, so a delivery costs no task creation.
* **Backpressure.** The reader stops reading once ``max_buffered`` entries are pending and
  resumes when half of them are done.
* **Wake-up on commit.** When caught up, the reader awaits ``store.wait_for_new`` (no polling
  in process).
* **Checkpoints are batched**: saved at most every ``checkpoint_interval`` seconds by a
  separate loop, and once more when the consumer stops.

The reader and the checkpoint loop run under the :class:`~contexten.resilience.Supervisor`:
if one crashes (the store went away for a moment), it is restarted with backoff and carries
on from where it was.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass, field

from contexten.bus.dead_letters import DEAD_LETTER_STREAM_PREFIX, REDRIVEN
from contexten.bus.delivery import Abandoned, Deliverer, Delivery
from contexten.bus.subscription import SYSTEM_STREAM_PREFIX
from contexten.bus.timing import DurationSnapshot
from contexten.bus.watchdog import WorkerSlot
from contexten.exceptions import AppNotRunning
from contexten.observability.logging import get_logger
from contexten.resilience.supervisor import Supervisor, TaskState
from contexten.store.base import EventStore, RecordedEvent

__all__ = ["Consumer", "ConsumerState", "ConsumerStatus"]


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
    """A snapshot of one subscription's progress.

    Attributes:
        name: the subscription.
        state: running, restarting, stopped...
        position: every log entry up to here is done (the in-memory checkpoint).
        checkpoint: the position last saved in the store.
        fetched: the last log position read.
        pending: entries read and not yet done (in flight, waiting for their key, retrying).
        handled: deliveries completed since start.
        failed_attempts: handler attempts that failed since start.
        parked: deliveries parked in the dead-letter queue since start.
        restarts: how often the reader or checkpoint loop was restarted after a crash.
        durations: how long handler attempts took.
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


class Consumer:
    """Delivers one subscription's events; see the module docstring for the guarantees.

    Args:
        deliverer: runs each delivery (handler, retries, parking).
        store: the open event store to tail.
        supervisor: runs the reader and checkpoint loops.
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
        batch_size: int = 500,
        max_buffered: int | None = None,
        checkpoint_interval: float = 0.05,
    ) -> None:
        sub = deliverer.subscription
        self.subscription = sub
        self.deliverer = deliverer
        self.state = ConsumerState.STARTING
        self._store = store
        self._supervisor = supervisor
        self._batch_size = batch_size
        self._max_buffered = max_buffered or max(1000, 10 * sub.concurrency)
        self._resume_at = self._max_buffered // 2
        self._checkpoint_interval = checkpoint_interval
        self._name = sub.name
        self._reader_task = f"dispatch:{sub.name}:reader"
        self._checkpoint_task = f"dispatch:{sub.name}:checkpoint"
        self._fetched = 0
        self._acked = 0
        self._saved = 0
        self._pending: deque[Delivery] = deque()
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

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) the checkpoint and start the reader and checkpoint loops."""
        sub = self.subscription
        position = await self._store.get_checkpoint(sub.checkpoint_name)
        if position is None:
            position = 0
            if sub.start == "now":
                position = await self._store.head()
                await self._store.save_checkpoint(sub.checkpoint_name, position)
        self._fetched = self._acked = self._saved = position
        self._supervisor.start(self._reader_task, self._read_loop)
        self._supervisor.start(self._checkpoint_task, self._checkpoint_loop)
        self.state = ConsumerState.RUNNING
        self._log.debug("subscription started", position=position)

    async def stop(self, grace: float) -> None:
        """Stop: no more reading; in-flight handlers get ``grace`` seconds to finish, the rest
        are cancelled without being acknowledged; then the checkpoint is saved."""
        if self.state in (ConsumerState.STOPPING, ConsumerState.STOPPED):
            return
        self.state = ConsumerState.STOPPING
        self._stopping = True
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
        except Exception as e:
            self._log.error("could not save the checkpoint at shutdown", exc_info=e)
        self.state = ConsumerState.STOPPED
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(AppNotRunning(f"subscription {self._name!r} stopped"))
        self._waiters.clear()

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        store = self._store
        while not self._stopping:
            if len(self._pending) >= self._max_buffered:
                self._space.clear()
                await self._space.wait()
                continue
            records = await store.read_all(after=self._fetched, limit=self._batch_size)
            if not records:
                await store.wait_for_new(self._fetched, timeout=5.0)
                continue
            for rec in records:
                if self.stopping:
                    return
                if self._accept(rec):
                    await self._accept_redrive(rec)
                self._fetched = rec.position
            # Let workers run even when the store answers without suspending.
            await asyncio.sleep(0)

    def _accept(self, rec: RecordedEvent) -> bool:
        """Queue ``rec`` for delivery or count it done; True if it is a redrive to resolve."""
        sub = self.subscription
        event = rec.event
        if rec.stream.startswith(SYSTEM_STREAM_PREFIX):
            if (
                event.type == REDRIVEN
                and event.data.get("subscription") == self._name
                and rec.stream.startswith(DEAD_LETTER_STREAM_PREFIX)
            ):
                return True
            if not sub.include_system:
                self._skip(rec.position)
                return False
        if not sub.type_matches(event.type):
            self._skip(rec.position)
            return False
        check_where = False
        if sub.where is not None:
            try:
                if not sub.where(event):
                    self._skip(rec.position)
                    return False
            except Exception:
                check_where = True  # re-run in the attempt, so the error is retried/parked
        d = Delivery(rec.position, event, self._key(rec), check_where=check_where)
        self._pending.append(d)
        self._schedule(d)
        return False

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

    async def _accept_redrive(self, rec: RecordedEvent) -> None:
        event_id = str(rec.event.data.get("event_id"))
        original = await self._store.get_event(event_id)
        if original is None:
            self._log.error("redriven event not found in the store", event_id=event_id)
            self._skip(rec.position)
            return
        d = Delivery(
            rec.position,
            original.event,
            self._key(original),
            letter_id=rec.event.data.get("letter_id"),
        )
        self._pending.append(d)
        self._schedule(d)

    # -- progress --------------------------------------------------------------------------

    def _skip(self, position: int) -> None:
        if self._pending:
            self._pending.append(Delivery(position, None, done=True))
        else:
            self._acked = position
            self._progressed()

    def _done(self, d: Delivery) -> None:
        d.done = True
        pending = self._pending
        if pending[0] is not d:
            return
        acked = self._acked
        while pending and pending[0].done:
            acked = pending.popleft().position
        self._acked = acked
        self._progressed()

    def _progressed(self) -> None:
        if not self._dirty.is_set():
            self._dirty.set()
        if not self._space.is_set() and len(self._pending) <= self._resume_at:
            self._space.set()
        if self._waiters:
            acked = self._acked
            still = []
            for position, fut in self._waiters:
                if position <= acked:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((position, fut))
            self._waiters = still

    async def wait_until(self, position: int) -> None:
        """Return once every log entry up to ``position`` is done for this subscription.

        Raises:
            AppNotRunning: the consumer stopped first.
        """
        if self._acked >= position:
            return
        if self.state is ConsumerState.STOPPED:
            raise AppNotRunning(f"subscription {self._name!r} is stopped")
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((position, fut))
        await fut

    async def _checkpoint_loop(self) -> None:
        if self._acked > self._saved:
            self._dirty.set()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._save()
            await asyncio.sleep(self._checkpoint_interval)

    async def _save(self) -> None:
        acked = self._acked
        if acked > self._saved:
            await self._store.save_checkpoint(self.subscription.checkpoint_name, acked)
            self._saved = acked

    async def flush(self) -> None:
        """Save the checkpoint now (if it moved)."""
        await self._save()

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
        """Deliver ``d`` and mark it done; only shutdown leaves it undone."""
        while True:
            try:
                await self.deliverer.deliver(d, slot)
            except (Abandoned, asyncio.CancelledError):
                raise
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
        return ConsumerStatus(
            name=self._name,
            state=state,
            position=self._acked,
            checkpoint=self._saved,
            fetched=self._fetched,
            pending=sum(1 for d in self._pending if not d.done),
            handled=stats.handled,
            failed_attempts=stats.failed_attempts,
            parked=stats.parked,
            restarts=restarts,
            durations=stats.durations.snapshot(),
        )

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun."""
        return self._stopping

    @property
    def position(self) -> int:
        """Every log entry up to here is done."""
        return self._acked

    def __repr__(self) -> str:
        return f"Consumer({self._name!r}, position={self._acked}, state={self.state.value})"
