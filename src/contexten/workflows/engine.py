"""The workflow engine: registers workflows and state machines, runs and recovers instances.

The engine is a self-contained consumer of the event store. It tails the global log (from its
checkpoint) to start workflows on matching events, feed state machines and resume
``wait_for`` calls; it keeps each running instance as an asyncio task; and on
:meth:`WorkflowEngine.start` it finds every unfinished instance in the store and resumes it.
All state lives in the instance streams (``$wf-{id}``), so any number of restarts, or a
second engine on the same store, leave each instance consistent.

Use it standalone (tests, scripts) or through :class:`contexten.App`, which wires one::

    engine = WorkflowEngine(store)

    @engine.workflow("greet")
    async def greet(wf, name):
        return await wf.step(say_hello, name)

    async with engine:
        handle = await engine.start_workflow("greet", "Ada", workflow_id="greet-ada")
        print(await handle.result())
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import msgspec

from contexten.bus.partitions import LeaseSettings
from contexten.clock import Clock, WallClock
from contexten.events.envelope import Event
from contexten.events.patterns import compile_pattern
from contexten.exceptions import (
    ConfigurationError,
    MigrationRefused,
    StoreClosed,
    WorkflowAlreadyStarted,
    WorkflowError,
    WorkflowNotFound,
    WorkflowNotRegistered,
    WrongExpectedVersion,
)
from contexten.resilience.retry import RetryPolicy
from contexten.resilience.supervisor import Supervisor, TaskStatus
from contexten.store.base import Append, EventStore, RecordedEvent, StreamState
from contexten.workflows import admin
from contexten.workflows._adoption import AdoptionState, Owners, run_heartbeat
from contexten.workflows._instance import WorkflowInstance, lifecycle_event
from contexten.workflows._limits import Limiter
from contexten.workflows._machine import MachineInstance
from contexten.workflows._ownership import Ownership, new_owner_id
from contexten.workflows._tail import prefill, run_tail
from contexten.workflows._waits import WaitIndex
from contexten.workflows.admin import WorkflowInfo
from contexten.workflows.definition import (
    IdReusePolicy,
    WorkflowDefinition,
    WorkflowFn,
    WorkflowHandle,
    version_key,
)
from contexten.workflows.history import (
    STREAM_PREFIX,
    WorkflowState,
    WorkflowStatus,
    apply,
    fold,
    history_event,
    public_stream,
    stream_name,
    workflow_id_of,
)
from contexten.workflows.migration import MigrationPlan, plan_migration
from contexten.workflows.schedules import Schedule, Scheduler
from contexten.workflows.state_machine import StateMachine
from contexten.workflows.stats import WorkflowStats
from contexten.workflows.steps import to_json_value

__all__ = [
    "HEARTBEAT_LOOP",
    "LOOPS",
    "SCHEDULES_LOOP",
    "TAIL_LOOP",
    "IdReusePolicy",
    "WorkflowDefinition",
    "WorkflowEngine",
    "WorkflowFn",
    "WorkflowHandle",
]

_log = logging.getLogger("contexten.workflows")

F = TypeVar("F", bound=WorkflowFn)

_RECOVERY_CHUNK = 512
_VERSION_GONE = "version_not_registered"
_START_TRIES = 20

_DUPLICATE = "duplicate"
_STALE = "stale"
_KEPT_BY_POLICY = "id_reuse_policy"
_CONTENDED = "contended"
TRIGGER_IGNORED_REASONS: dict[str, str] = {
    _DUPLICATE: "a redelivery of the trigger that started or was absorbed by the run",
    _STALE: "an older trigger, overtaken by a newer one the id already took",
    _KEPT_BY_POLICY: "the run is closed and the id reuse policy starts no new one",
    _CONTENDED: "the run's history kept moving; the trigger could not be recorded",
}
"""Why a trigger event started no run and was recorded in no run's history (the
``reason`` label of ``contexten_workflow_triggers_ignored_total``)."""


def _stale_reason(state: WorkflowState, trigger: RecordedEvent) -> str:
    """``duplicate`` when ``trigger`` is the event the run already took, else ``stale``."""
    event_id = trigger.event.id
    previous = state.previous_run or {}
    if event_id in (state.trigger_event_id, previous.get("trigger_event_id")) or any(
        e.kind == "trigger_absorbed" and e.data.get("event_id") == event_id for e in state.entries
    ):
        return _DUPLICATE
    return _STALE


TAIL_LOOP: Final = "workflows:tail"
"""The supervised loop that starts, feeds and wakes instances from the log."""
HEARTBEAT_LOOP: Final = "workflows:heartbeat"
"""The supervised loop that renews the engine's registration and adopts orphans."""
SCHEDULES_LOOP: Final = "workflows:schedules"
"""The supervised loop that fires durable schedules (only when some are registered)."""
RECOVERY_LOOP: Final = "workflows:recovery"
"""The supervised start-up recovery: retried until it succeeds, then starts the others."""
LOOPS: Final = (RECOVERY_LOOP, TAIL_LOOP, HEARTBEAT_LOOP, SCHEDULES_LOOP)

DEFAULT_STEP_TIMEOUT: float = 300.0
"""Seconds one step attempt may take when neither the step nor the engine says otherwise."""


class WorkflowEngine:
    """Runs durable function workflows and state machines on an event store.

    Args:
        store: the event store (opened and closed by the caller).
        clock: where time comes from (default: the wall clock; tests pass a VirtualClock).
        default_retry: the retry policy of steps and actions that name none.
        default_step_timeout: how long one attempt of a step, compensation or action that
            names no timeout may take, in real seconds (or a timedelta; None: no limit). A
            platform call that hangs then fails its attempt, which ``default_retry`` retries,
            and the instance fails or compensates with the timeout in its history instead of
            stalling forever. Five minutes: far above a platform call's own deadlines, far
            below the hours a workflow may wait or sleep. Real time, not ``clock``'s, so a
            virtual clock that skips idle time never cuts short a step doing real I/O.
        checkpoint: the name of the engine's tail checkpoint in the store.
        start_from: where the tail starts when it has no checkpoint yet: ``"beginning"``
            (every stored event may trigger workflows) or ``"end"`` (only new ones).
        buffer_size: how many recent events are kept in memory for ``wait_for`` look-back.
        batch_size: log entries the tail reads per query.
        owner: this engine's owner id (default: ``host/pid/random``; see
            :mod:`contexten.workflows._ownership`).
        lease: seconds without a heartbeat after which an engine is taken for dead: its
            unfinished instances are adopted and its concurrency slots freed (default:
            ``CONTEXTEN_LEASE_SECONDS``, else 10, as the dispatcher's partition leases).
        heartbeat: seconds between renewals of the engine's registration, each of which also
            adopts the instances whose owner left the registry (default:
            ``CONTEXTEN_HEARTBEAT_SECONDS``, else 2). A dead engine's instances are adopted
            within about ``lease + heartbeat`` (see :mod:`contexten.workflows._adoption`).
        adopt_interval: seconds between full scans of the unfinished instances, a safety net
            beside the heartbeat's adoption (0: none after the start).
        reap_local: take an engine of this host whose process is gone for dead at once,
            without waiting for its lease (default: ``CONTEXTEN_REAP_LOCAL_WORKERS``, on).
        supervisor: runs the engine's background loops (its tail, heartbeat and schedules)
            and restarts one that crashes, with backoff (the App passes its own, so the
            restarts show in ``app.health()``; default: a supervisor of its own).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        clock: Clock | None = None,
        default_retry: RetryPolicy | None = None,
        default_step_timeout: float | timedelta | None = DEFAULT_STEP_TIMEOUT,
        checkpoint: str = "wf-engine",
        start_from: Literal["beginning", "end"] = "beginning",
        buffer_size: int = 10_000,
        batch_size: int = 500,
        owner: str | None = None,
        lease: float | None = None,
        heartbeat: float | None = None,
        adopt_interval: float = 30.0,
        reap_local: bool | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or WallClock()
        self.default_retry = default_retry or RetryPolicy(maximum_attempts=3)
        self.default_step_timeout: float | None = (
            default_step_timeout.total_seconds()
            if isinstance(default_step_timeout, timedelta)
            else default_step_timeout
        )
        if self.default_step_timeout is not None and self.default_step_timeout <= 0:
            raise ConfigurationError("default_step_timeout must be positive (or None)")
        self.checkpoint = checkpoint
        self.start_from = start_from
        self.batch_size = batch_size
        self.waits = WaitIndex(store, buffer_size)
        unset = None in (lease, heartbeat, reap_local)
        env = LeaseSettings.from_env() if unset else LeaseSettings()
        lease = env.lease if lease is None else lease
        self.heartbeat: float = env.heartbeat if heartbeat is None else heartbeat
        if not self.heartbeat > 0 or not lease > 2 * self.heartbeat:
            raise ConfigurationError(
                f"the engine's lease ({lease:g} s) must be more than twice its heartbeat "
                f"({self.heartbeat:g} s), and the heartbeat > 0"
            )
        reap = env.reap_local if reap_local is None else reap_local
        self.ownership = Ownership(store, owner or new_owner_id(), lease, reap_local=reap)
        self.adopt_interval = adopt_interval
        self.supervisor = supervisor if supervisor is not None else Supervisor(clock=self.clock)
        """Runs the tail, heartbeat and schedule loops (:data:`LOOPS`), restarting a crashed
        one with backoff."""
        self.tail_position = 0
        """The log position the tail has processed up to (a crashed tail resumes there)."""
        self._adoption = AdoptionState()
        self.owners = Owners()
        """Who owns each unfinished function instance (what the heartbeat adopts from)."""
        self._definitions: dict[str, WorkflowDefinition] = {}  # the newest version by name
        self._versions: dict[str, dict[str, WorkflowDefinition]] = {}
        self._machines: dict[str, StateMachine] = {}
        self._live: dict[str, WorkflowInstance] = {}
        self._sm_live: dict[str, MachineInstance] = {}
        self._running = False
        self._ready = False
        self._attempted = asyncio.Event()
        self._recovered_at = 0
        self._closed: StoreClosed | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.stats = WorkflowStats()
        """What this engine counted since it started (ended, failed by cause...)."""
        self.schedules = Scheduler(self)
        """The durable schedules this engine fires (with every other engine on the store)."""
        self.unfinished_index: Callable[[], Awaitable[list[str]]] | None = None
        """Where the ids of unfinished instances come from (the App's ``workflows`` read
        model); None: list and fold every instance stream."""

    # -- registration ------------------------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        on: str | None = None,
        where: Callable[[Event], bool] | None = None,
        key: Callable[[Event], Any] | None = None,
        version: int | str = 1,
        max_concurrent: int | None = None,
        max_per_key: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        id_reuse: IdReusePolicy | str | None = None,
    ) -> Callable[[F], F]:
        """Register a function workflow (decorator); returns the function unchanged.

        Args:
            name: the workflow's name (default: the function's name).
            on: start an instance for each stored event of this type pattern...
            where: ...that also satisfies this predicate.
            key: instance key of a trigger event: the id is ``"{name}:{key(event)}"``, so a
                second event with the same key does not start a second instance (default:
                the event id).
            version: this function's version (``1``, ``2``...). Several versions of one
                name may be registered side by side: new instances start on the newest (whose
                ``on``/``where``/``key`` are the trigger), and each instance runs on the
                version it started with for as long as that version is registered; an
                instance whose version is gone is ``blocked`` until it is migrated.
            max_concurrent: at most this many instances running at once, over every engine
                on the store (parked ones do not count; see
                :mod:`contexten.workflows._limits`).
            max_per_key: at most this many running per ``concurrency_key(input)``.
            concurrency_key: the per-key limit's key, from the workflow's input (required
                with ``max_per_key``; an instance whose key is None is not limited per key).
            id_reuse: when a start whose id exists starts a new run (see
                :class:`IdReusePolicy`; default: after the previous run closed for trigger
                events, never for explicit starts).
        """

        def register(fn: F) -> F:
            self.register(
                fn,
                name=name or getattr(fn, "__name__", None),
                on=on,
                where=where,
                key=key,
                version=version,
                max_concurrent=max_concurrent,
                max_per_key=max_per_key,
                concurrency_key=concurrency_key,
                id_reuse=id_reuse,
            )
            return fn

        return register

    def register(
        self,
        fn: WorkflowFn,
        *,
        name: str | None = None,
        on: str | None = None,
        where: Callable[[Event], bool] | None = None,
        key: Callable[[Event], Any] | None = None,
        version: int | str = 1,
        max_concurrent: int | None = None,
        max_per_key: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        id_reuse: IdReusePolicy | str | None = None,
    ) -> WorkflowDefinition:
        """Register ``fn`` as a workflow (the non-decorator form of :meth:`workflow`).

        Raises:
            ConfigurationError: no name, an empty version, an unknown ``id_reuse``, a state
                machine of that name, this version of the name already registered, or
                ``max_per_key`` without ``concurrency_key``.
        """
        wf_name = name or getattr(fn, "__name__", None)
        if not wf_name:
            raise ConfigurationError("a workflow needs a name")
        ver = str(version).strip()
        if not ver or any(c.isspace() for c in ver):
            raise ConfigurationError(f"workflow {wf_name!r}: bad version {version!r}")
        try:
            policy = IdReusePolicy(id_reuse) if id_reuse is not None else None
        except ValueError:
            choices = ", ".join(p.value for p in IdReusePolicy)
            raise ConfigurationError(
                f"workflow {wf_name!r}: id_reuse must be one of {choices}, not {id_reuse!r}"
            ) from None
        if max_per_key is not None and concurrency_key is None:
            raise ConfigurationError(
                f"workflow {wf_name!r}: max_per_key needs concurrency_key=, the function of "
                "the input that names the key (one instance id never runs twice at once)"
            )
        versions = self._versions.setdefault(wf_name, {})
        if wf_name in self._machines or ver in versions:
            raise ConfigurationError(
                f"a workflow named {wf_name!r} (version {ver}) is already registered"
            )
        definition = WorkflowDefinition(
            name=wf_name,
            fn=fn,
            version=ver,
            on=compile_pattern(on) if on else None,
            where=where,
            key=key,
            limiter=Limiter(max_concurrent, max_per_key, wf_name),
            concurrency_key=concurrency_key,
            id_reuse=policy,
        )
        versions[ver] = definition
        self._definitions[wf_name] = max(versions.values(), key=lambda d: version_key(d.version))
        return definition

    def schedule(self, schedule: Schedule) -> Schedule:
        """Register a durable schedule (see :mod:`contexten.workflows.schedules`); it fires
        while the engine runs, once per tick across every engine on the store."""
        return self.schedules.add(schedule)

    def add(self, machine: StateMachine) -> StateMachine:
        """Register a state machine; its instances are driven by the events it listens to."""
        if machine.name in self._definitions or machine.name in self._machines:
            raise ConfigurationError(f"a workflow named {machine.name!r} is already registered")
        self._machines[machine.name] = machine
        return machine

    @property
    def definitions(self) -> dict[str, WorkflowDefinition]:
        """The registered function workflows by name (the newest version of each)."""
        return dict(self._definitions)

    def versions(self, name: str) -> dict[str, WorkflowDefinition]:
        """Every registered version of workflow ``name``, oldest first (empty if unknown)."""
        found = self._versions.get(name, {})
        return {v: found[v] for v in sorted(found, key=version_key)}

    def definition_for(self, state: WorkflowState) -> WorkflowDefinition | None:
        """The registered definition an instance runs on: the version it started with (a
        history without a version is version ``1``, or the only version registered), or
        None when that version is not registered."""
        versions = self._versions.get(state.name)
        if not versions:
            return None
        if state.version:
            return versions.get(state.version)
        if "1" in versions:
            return versions["1"]
        return next(iter(versions.values())) if len(versions) == 1 else None

    @property
    def machines(self) -> dict[str, StateMachine]:
        """The registered state machines by name."""
        return dict(self._machines)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not."""
        return self._running

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Resume every unfinished instance in the store, then tail the log. Idempotent.

        The start-up recovery (register, fold the unfinished instances, resume them) runs
        as the supervised task :data:`RECOVERY_LOOP`; this waits for its first attempt. If
        that attempt fails (the store went away mid-scan: a PostgreSQL restart), the error
        is logged and the supervisor retries it with a backoff capped at the heartbeat
        (so the engine's registration does not lapse meanwhile), while the caller carries
        on: :attr:`ready` stays False, and ``app.health()`` shows the engine not ready,
        until an attempt succeeds and starts the tail, heartbeat and schedule loops. A
        retry skips the instances an earlier attempt already launched, so none runs twice.
        """
        if self._running:
            return
        self._running = True
        self._ready = False
        self.owners = Owners()
        attempted = self._attempted = asyncio.Event()
        backoff = RetryPolicy(
            initial_interval=min(0.1, self.heartbeat),
            backoff_coefficient=2.0,
            maximum_interval=self.heartbeat,
            maximum_attempts=0,
        )
        self.supervisor.start(RECOVERY_LOOP, self._start_up, backoff=backoff)
        await attempted.wait()
        error, self._closed = self._closed, None
        if error is not None:  # started on a closed store: a caller's mistake
            await self.stop()
            raise error

    @property
    def ready(self) -> bool:
        """Whether the start-up recovery has succeeded (and the engine's loops run)."""
        return self._running and self._ready

    async def _start_up(self) -> None:
        """One attempt at the start-up recovery; on success, start the engine's loops."""
        try:
            try:
                await self._recover_once()
            except StoreClosed as e:  # not going to come back: stop retrying
                _log.warning("workflow engine: the store is closed; start-up recovery stopped")
                self._closed = e
                return
            if not self._running:
                return
            self.tail_position = self.stats.tail_position = self._recovered_at
            self._adoption = AdoptionState()
            self.supervisor.start(TAIL_LOOP, functools.partial(run_tail, self))
            beat = functools.partial(run_heartbeat, self, self._adoption)
            self.supervisor.start(HEARTBEAT_LOOP, beat)
            if self.schedules.schedules:
                self.supervisor.start(SCHEDULES_LOOP, self.schedules.run)
            self._ready = True
            _log.info("workflow engine recovered; tailing from %d", self._recovered_at)
        finally:
            self._attempted.set()

    async def _recover_once(self) -> None:
        await self.ownership.beat()
        checkpoint = await self.store.get_checkpoint(self.checkpoint)
        if checkpoint is None:
            checkpoint = 0 if self.start_from == "beginning" else await self.store.head()
        await self._recover(checkpoint)
        self._recovered_at = checkpoint

    async def stop(self) -> None:
        """Stop the tail and every live instance (their progress is in the store). Idempotent."""
        self._running = False
        self._ready = False
        self._attempted.set()  # a start() waiting for a first attempt cancelled here returns
        self.stats.tail_position = None
        for loop in LOOPS:
            if loop in self.supervisor:
                await self.supervisor.stop(loop)
        tasks: list[asyncio.Task[Any]] = []
        tasks.extend(i.task for i in self._live.values() if i.task is not None)
        tasks.extend(m._worker for m in self._sm_live.values() if m._worker is not None)
        tasks.extend(t for t in self._background if isinstance(t, asyncio.Task))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._live.clear()
        self._sm_live.clear()
        await self.ownership.release()

    def loop_statuses(self) -> list[TaskStatus]:
        """The state, restart count and last crash of each background loop the engine
        started (for ``app.health()``): all ``running`` while it works. Until the start-up
        recovery has succeeded, its own task (:data:`RECOVERY_LOOP`: running, or backing
        off with the error of its last attempt) is listed; after that, the other loops."""
        if self._running and not self._ready and RECOVERY_LOOP in self.supervisor:
            return [self.supervisor.status(RECOVERY_LOOP)]
        return [self.supervisor.status(n) for n in LOOPS[1:] if n in self.supervisor]

    async def _unfinished(self) -> list[WorkflowState]:
        if self.unfinished_index is not None:  # a read model knows which; fold only those
            streams = [stream_name(i) for i in await self.unfinished_index()]
        else:
            streams = [s.stream for s in await self.store.list_streams(STREAM_PREFIX, limit=10**9)]
        states: list[WorkflowState] = []
        for i in range(0, len(streams), _RECOVERY_CHUNK):
            chunk = [
                s for s in streams[i : i + _RECOVERY_CHUNK] if workflow_id_of(s) not in self._live
            ]
            batches = await asyncio.gather(*(self.store.read_stream(s) for s in chunk))
            for stream, records in zip(chunk, batches, strict=True):
                state = fold(records, workflow_id_of(stream))
                if state.exists and not state.terminal:
                    states.append(state)
        return states

    async def _recover(self, checkpoint: int) -> None:
        states = await self._unfinished()
        for state in states:
            self.owners.know(state)
        floor = min((s.after for s in states if s.kind == "function"), default=checkpoint)
        await prefill(self, min(floor, checkpoint), checkpoint)
        for i in range(0, len(states), _RECOVERY_CHUNK):  # claims group-commit together
            await asyncio.gather(*(self._resume(s) for s in states[i : i + _RECOVERY_CHUNK]))

    async def _claim(self, state: WorkflowState, *, force: bool = False) -> bool:
        """Take ``state``'s instance over unless a live engine owns it; True if ours."""
        if state.owner == self.ownership.owner:
            return True
        if not force and not await self.ownership.gone(state.owner):
            return False
        event = history_event("claimed", {"owner": self.ownership.owner}, state.workflow_id)
        try:
            result = await self.store.append(
                stream_name(state.workflow_id), [event], expected_version=state.stream_version
            )
        except WrongExpectedVersion:
            return False  # another engine moved it first; it runs it
        state.owner = self.ownership.owner
        state.stream_version = result.version
        return True

    async def _resume(self, state: WorkflowState, *, force: bool = False) -> None:
        if state.kind == "state_machine":
            machine = self._machines.get(state.name)
            if machine is None:
                _log.warning("no state machine %r registered for %s", state.name, state.workflow_id)
                return
            inst = self._machine_instance(machine, state.workflow_id, state)
            if state.stream_version > inst.state.stream_version:
                inst.state = state
            inst.resume()
            return
        if state.name not in self._versions:
            _log.warning("no workflow %r registered for instance %s", state.name, state.workflow_id)
            return
        definition = self.definition_for(state)
        if state.blocked and state.cancel_requested:
            if state.workflow_id not in self._live and await self._claim(state, force=force):
                await self._cancel_blocked(state)
            return
        if state.blocked and (definition is None or state.blocked_reason != _VERSION_GONE):
            return  # waits for an operator (redrive after a fix, or migrate)
        if state.workflow_id in self._live or not await self._claim(state, force=force):
            return
        if definition is None:
            await self._block_unregistered(state)
            return
        if state.blocked:  # its version is registered again: carry on where it stopped
            await self._control(state, "redriven", {"reason": f"version {state.version} is back"})
        self._launch(definition, state)

    async def _control(self, state: WorkflowState, kind: str, data: dict[str, Any]) -> bool:
        """Append one control event to an instance this engine owns; False if it moved."""
        event = history_event(kind, data, state.workflow_id)
        try:
            result = await self.store.append(
                stream_name(state.workflow_id), [event], expected_version=state.stream_version
            )
        except WrongExpectedVersion:
            return False
        rec = RecordedEvent(
            result.first_position,
            stream_name(state.workflow_id),
            result.version,
            self.clock.now(),
            event,
        )
        apply(state, rec)
        return True

    async def _cancel_blocked(self, state: WorkflowState) -> None:
        """End a blocked instance whose cancellation was asked for: ``cancelled``, saying
        that its compensations did not run (the code that would run them diverged or is
        gone; undo by hand, or migrate first and cancel then)."""
        error = {
            "type": "cancelled",
            "message": "cancelled while blocked: its compensations were not run",
            "non_retryable": True,
        }
        event = history_event("cancelled", {"error": error}, state.workflow_id)
        public = lifecycle_event(state, "cancelled", {"error": error})
        try:
            await self.store.commit(
                [
                    Append(stream_name(state.workflow_id), [event], state.stream_version),
                    Append(public_stream(state.workflow_id), [public]),
                ]
            )
        except WrongExpectedVersion:
            return  # it moved: whoever moved it decides
        self.stats.record_end(state, "cancelled", {"error": error})
        _log.warning("workflow %s cancelled while blocked", state.workflow_id)

    async def _block_unregistered(self, state: WorkflowState) -> None:
        registered = ", ".join(self.versions(state.name)) or "none"
        message = (
            f"workflow {state.name!r} version {state.version or '?'} is not registered "
            f"(registered: {registered}); migrate the instance to one of them, or deploy "
            "that version again"
        )
        error = {"type": "VersionNotRegistered", "message": message, "non_retryable": True}
        data = {"reason": _VERSION_GONE, "error": error, "version": state.version}
        if state.blocked or not await self._control(state, "blocked", data):
            return
        self.stats.blocked[state.name] += 1
        _log.error("workflow %s blocked: %s", state.workflow_id, message)

    def _launch(self, definition: WorkflowDefinition, state: WorkflowState) -> WorkflowInstance:
        existing = self._live.get(state.workflow_id)
        if existing is not None and not existing.done.done():
            return existing  # (a finished one may linger a moment: a new run replaces it)
        inst = WorkflowInstance(self, definition, state)
        self._live[state.workflow_id] = inst
        inst.task = asyncio.create_task(inst.run(), name=f"wf:{state.workflow_id}")
        return inst

    def _forget(self, inst: WorkflowInstance) -> None:
        if self._live.get(inst.workflow_id) is inst:
            del self._live[inst.workflow_id]

    def _machine_instance(
        self, machine: StateMachine, workflow_id: str, state: WorkflowState | None
    ) -> MachineInstance:
        inst = self._sm_live.get(workflow_id)
        if inst is None:
            inst = self._sm_live[workflow_id] = MachineInstance(self, machine, workflow_id, state)
        return inst

    def _machine_idle(self, inst: MachineInstance) -> None:
        if inst.idle and len(self._sm_live) > 10_000:
            self._sm_live.pop(inst.workflow_id, None)

    # -- starting and querying -----------------------------------------------------------------

    async def start_workflow(
        self,
        name: str,
        input: Any = None,
        workflow_id: str | None = None,
        *,
        if_exists: Literal["return", "raise"] = "return",
        parent_id: str | None = None,
        _trigger: RecordedEvent | None = None,
    ) -> WorkflowHandle:
        """Start an instance of workflow ``name`` (idempotently) and return its handle.

        Starting is appending the instance's first event on the condition that its stream
        does not exist (or, for a later run, is still where the previous run ended), so
        concurrent starts of one id (from any number of processes) make exactly one run.
        The new instance runs on the newest registered version.

        When the id exists, the workflow's :class:`IdReusePolicy` decides: a new run
        (numbered, linked to the previous one) or the existing run's handle.

        Args:
            name: a registered workflow.
            input: the workflow's input: an :class:`Event` or any JSON value.
            workflow_id: the instance id (default: a new UUIDv7).
            if_exists: when the id exists and no new run starts, ``"return"`` its handle or
                ``"raise"``.
            parent_id: the parent instance (set by ``wf.run_child``).

        Raises:
            WorkflowNotRegistered: no workflow ``name``.
            WorkflowAlreadyStarted: the id exists, no new run starts, and
                ``if_exists="raise"``.
        """
        definition = self._definitions.get(name)
        if definition is None:
            raise WorkflowNotRegistered(f"no workflow named {name!r} is registered")
        from contexten.events.ids import new_id

        wid = workflow_id or new_id()
        data = self.started_data(definition, wid, input, parent_id=parent_id)
        if _trigger is not None:
            data["trigger_event_id"] = _trigger.event.id
            data["after"] = _trigger.position
        expected: int | StreamState = StreamState.NO_STREAM
        for _ in range(_START_TRIES):
            started = history_event("started", data, wid)
            stream = stream_name(wid)
            try:
                result = await self.store.append(stream, [started], expected_version=expected)
            except WrongExpectedVersion:
                previous = await admin.load_state(self.store, wid)
                if previous is None:
                    continue
                policy = definition.reuse_policy(_trigger is not None)
                if _trigger is not None and _trigger.position <= previous.trigger_fence:
                    self._trigger_ignored(previous, _trigger, _stale_reason(previous, _trigger))
                elif previous.kind == "function" and policy.allows(previous):
                    data["run"] = previous.run + 1
                    data["previous_run"] = {
                        "run": previous.run,
                        "status": str(previous.status),
                        "version": previous.version,
                        "trigger_event_id": previous.trigger_event_id,
                    }
                    expected = previous.stream_version
                    continue
                elif _trigger is not None and previous.terminal:
                    self._trigger_ignored(previous, _trigger, _KEPT_BY_POLICY)
                elif _trigger is not None and not await self._absorb_trigger(previous, _trigger):
                    continue  # the run closed meanwhile: decide again on the closed run
                if if_exists == "raise":
                    raise WorkflowAlreadyStarted(wid) from None
                return WorkflowHandle(self, wid)
            self.stats.started[name] += 1
            if expected is not StreamState.NO_STREAM:
                self.stats.restarted[name] += 1
                _log.info("workflow %s: run %s started", wid, data["run"])
            if self._running:
                rec = RecordedEvent(
                    result.first_position, stream, result.version, self.clock.now(), started
                )
                self._launch(definition, fold([rec], wid))
            return WorkflowHandle(self, wid)
        return WorkflowHandle(self, wid)  # others kept moving the stream: theirs is the run

    def started_data(
        self,
        definition: WorkflowDefinition,
        workflow_id: str,
        input: Any,
        *,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        """The data of a new instance's ``started`` event (for starts committed together
        with something else, such as a schedule's tick)."""
        is_event = isinstance(input, Event)
        data: dict[str, Any] = {
            "workflow_id": workflow_id,
            "name": definition.name,
            "version": definition.version,
            "kind": "function",
            "input": msgspec.to_builtins(input) if is_event else to_json_value(input),
            "input_is_event": is_event,
            "owner": self.ownership.owner,
        }
        if is_event:
            data["trigger_event_id"] = input.id
        if parent_id is not None:
            data["parent_id"] = parent_id
        return data

    def launch_started(self, definition: WorkflowDefinition, rec: RecordedEvent) -> None:
        """Run an instance whose ``started`` event ``rec`` was just committed (if running)."""
        self.stats.started[definition.name] += 1
        if self._running:
            wid = workflow_id_of(rec.stream) or ""
            self._launch(definition, fold([rec], wid))

    async def _absorb_trigger(self, state: WorkflowState, trigger: RecordedEvent) -> bool:
        """Record, log and count a trigger that the id's open run absorbs.

        Returns False when the run closed meanwhile (the caller decides again: the id's
        reuse policy may start a new run for it). A trigger that another engine recorded
        first, or that a newer trigger overtook, is counted as ignored.
        """
        data = {
            "event_id": trigger.event.id,
            "event_type": trigger.event.type,
            "position": trigger.position,
        }
        for _ in range(_START_TRIES):
            if await self._control(state, "trigger_absorbed", data):
                self.stats.absorbed[state.name] += 1
                _log.info(
                    "workflow %s: trigger %s (%s) absorbed by the open run %s (%s)",
                    state.workflow_id,
                    trigger.event.id,
                    trigger.event.type,
                    state.run,
                    state.status,
                )
                return True
            reloaded = await admin.load_state(self.store, state.workflow_id)
            if reloaded is None or reloaded.terminal:
                return False
            if trigger.position <= reloaded.trigger_fence:
                self._trigger_ignored(reloaded, trigger, _stale_reason(reloaded, trigger))
                return True
            state = reloaded
        self._trigger_ignored(state, trigger, _CONTENDED)
        return True

    def _trigger_ignored(self, state: WorkflowState, trigger: RecordedEvent, reason: str) -> None:
        """Log and count a trigger event that starts no run and is recorded in no history
        (see :data:`TRIGGER_IGNORED_REASONS`): never silent."""
        self.stats.ignored[(state.name, reason)] += 1
        log = _log.debug if reason == _DUPLICATE else _log.info
        log(
            "workflow %s: trigger %s (%s, position %s) started nothing: %s (run %s is %s)",
            state.workflow_id,
            trigger.event.id,
            trigger.event.type,
            trigger.position,
            TRIGGER_IGNORED_REASONS[reason],
            state.run,
            state.status,
        )

    def live_state(self, workflow_id: str) -> WorkflowState | None:
        """The in-memory state of an instance this engine is running now, else None.

        A synchronous, store-free look-up for code running inside a step (an action
        recording which workflow and trigger event caused it); use :meth:`get_workflow`
        for an authoritative snapshot.
        """
        inst = self._live.get(workflow_id)
        if inst is not None:
            return inst.state
        machine = self._sm_live.get(workflow_id)
        return machine.state if machine is not None else None

    def get_handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle on an existing instance (not checked)."""
        return WorkflowHandle(self, workflow_id)

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """The snapshot of instance ``workflow_id``: status, result or error, step, history.

        Raises:
            WorkflowNotFound: no such instance.
        """
        state = await admin.load_state(self.store, workflow_id)
        if state is None:
            raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
        inst = self._live.get(workflow_id)
        return WorkflowInfo.from_state(state, current=inst.current if inst is not None else None)

    async def list_workflows(
        self, status: WorkflowStatus | str | None = None, *, name: str | None = None
    ) -> list[WorkflowInfo]:
        """Snapshots of the instances (optionally with ``status`` / ``name``)."""
        return await admin.list_workflows(self.store, status, name=name)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel an instance: compensate its completed steps, then end it ``cancelled``.

        A sleep or wait is interrupted at once; a running step finishes (and is recorded, so
        it is compensated) first. Returns False if the instance had already ended.

        Raises:
            WorkflowNotFound: no such instance.
        """
        inst = self._live.get(workflow_id)
        if inst is not None and not inst.state.terminal:
            inst.request_cancel()
            return True
        state = await admin.load_state(self.store, workflow_id)
        if state is None:
            raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
        if state.kind == "state_machine":
            machine = self._machines.get(state.name)
            if machine is None:
                raise WorkflowNotRegistered(f"no state machine named {state.name!r}")
            return await self._machine_instance(machine, workflow_id, state).cancel()
        return await admin.request_cancel(self.store, workflow_id)

    async def retry_workflow(self, workflow_id: str) -> WorkflowHandle:
        """Redrive a ``failed`` or ``blocked`` instance on its own version (see
        :func:`~contexten.workflows.request_redrive`): after a fix to that version's code.

        Raises:
            WorkflowNotFound: no such instance.
            WorkflowError: the instance is neither ``failed`` nor ``blocked``.
        """
        if not await admin.request_redrive(self.store, workflow_id):
            raise WorkflowError(
                f"workflow {workflow_id!r} is neither failed nor blocked; nothing to redrive"
            )
        if self._running:
            state = await admin.load_state(self.store, workflow_id)
            if state is not None and not state.terminal:
                await self._resume(state, force=True)
        return WorkflowHandle(self, workflow_id)

    async def plan_migration(self, workflow_id: str, to_version: int | str) -> MigrationPlan:
        """How instance ``workflow_id`` would move to registered version ``to_version``:
        its last compatible point and the calls (and effects) that would be superseded
        (see :mod:`contexten.workflows.migration`). Records nothing.

        Raises:
            WorkflowNotFound: no such instance.
            WorkflowNotRegistered: ``to_version`` is not registered for its workflow.
            WorkflowError: it is a state machine, or not ``blocked``.
            NondeterminismError: the version diverges from the history cut at the point.
        """
        return (await self._migration_of(workflow_id, to_version))[1]

    async def _migration_of(
        self, workflow_id: str, to_version: int | str
    ) -> tuple[WorkflowState, MigrationPlan]:
        target = str(to_version)
        state = await admin.load_state(self.store, workflow_id)
        if state is None:
            raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
        if state.kind != "function":
            raise WorkflowError(f"{workflow_id!r} is a state machine; only workflows migrate")
        definition = self.versions(state.name).get(target)
        if definition is None:
            raise WorkflowNotRegistered(
                f"workflow {state.name!r} has no registered version {target!r}"
            )
        if not state.blocked:
            raise WorkflowError(
                f"workflow {workflow_id!r} is {state.status}, not blocked; only a blocked "
                "instance is migrated"
            )
        return state, await plan_migration(state, definition)

    async def migrate_workflow(
        self, workflow_id: str, to_version: int | str, *, force: bool = False
    ) -> WorkflowHandle:
        """Move a ``blocked`` instance to registered version ``to_version`` and resume it
        from its last compatible point, verified by replay first (see :meth:`migrate`,
        which also returns what was superseded); returns the instance's handle."""
        await self.migrate(workflow_id, to_version, force=force)
        return WorkflowHandle(self, workflow_id)

    async def migrate(
        self, workflow_id: str, to_version: int | str, *, force: bool = False
    ) -> MigrationPlan:
        """Move a ``blocked`` instance to registered version ``to_version`` and resume it
        from its last compatible point, verified by replay first.

        The history is replayed against that version's code: the longest prefix of recorded
        calls it reproduces is kept (those calls never run again) and the instance resumes
        on it at the next call; the recorded calls after that point are superseded. The
        move is one ``migrated`` event naming the versions, the point and the superseded
        calls (the history is never rewritten), so every later replay follows it. When the
        superseded calls already made effects (a completed or failed step, an emitted event,
        a started child), the move is refused unless ``force``: forced, those effects stay
        as they are (not undone, not compensated) and the new code runs from the point.

        Returns:
            The plan that was carried out (``plan.effects``: what was already done).

        Raises:
            WorkflowNotFound: no such instance.
            WorkflowNotRegistered: ``to_version`` is not registered for its workflow.
            MigrationRefused: effects would be superseded and ``force`` is False, or the
                instance was compensating and the version does not replay it all.
            NondeterminismError: the version diverges from the history cut at the point.
            WorkflowError: the instance is not ``blocked`` (or moved meanwhile).
        """
        state, plan = await self._migration_of(workflow_id, to_version)
        effects = [f"{c.describe()}: {c.effect}" for c in plan.effects]
        if plan.refusal is not None:
            raise MigrationRefused(
                workflow_id, plan.refusal, point=plan.point, effects=effects, forceable=False
            )
        if effects and not force:
            raise MigrationRefused(
                workflow_id,
                f"version {plan.to_version} reproduces only {plan.point} of its "
                f"{plan.recorded_calls} recorded call(s), and the calls after that already "
                f"made effects ({'; '.join(effects)}); force it to resume at call "
                f"#{plan.resumes_at} anyway (those effects are neither undone nor compensated)",
                point=plan.point,
                effects=effects,
                forceable=True,
            )
        if not await self._control(state, "migrated", plan.marker_data(forced=force)):
            raise WorkflowError(f"workflow {workflow_id!r} changed meanwhile; try again")
        _log.warning(
            "workflow %s migrated from version %s to %s: resumes at call #%s, %s call(s) "
            "superseded%s",
            workflow_id,
            plan.from_version or "?",
            plan.to_version,
            plan.resumes_at,
            len(plan.superseded),
            f" (forced over {len(effects)} effect(s))" if effects else "",
        )
        if self._running:
            await self._resume(state, force=True)
        return plan

    async def fork_workflow(self, workflow_id: str, *, cancel_old: bool = False) -> WorkflowHandle:
        """Start a new instance from instance ``workflow_id``'s input on the newest version,
        linked both ways (``forked_from`` in its ``started`` event, ``forked`` in the old
        history); the old one is cancelled (compensating what it did; a blocked one without)
        when ``cancel_old``, else left as it is.

        The new id is ``{workflow_id}~fork-{n}``.

        Raises:
            WorkflowNotFound: no such instance.
            WorkflowNotRegistered: its workflow is not registered.
            WorkflowError: it is a state machine.
        """
        state = await admin.load_state(self.store, workflow_id)
        if state is None:
            raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
        if state.kind != "function":
            raise WorkflowError(f"{workflow_id!r} is a state machine; only workflows are forked")
        definition = self._definitions.get(state.name)
        if definition is None:
            raise WorkflowNotRegistered(f"no workflow named {state.name!r} is registered")
        for n in range(1, 1000):
            new_id = f"{workflow_id}~fork-{n}"
            data = self.started_data(definition, new_id, state.input_value())
            data["forked_from"] = {"workflow_id": workflow_id, "run": state.run}
            started = history_event("started", data, new_id)
            try:
                result = await self.store.append(
                    stream_name(new_id), [started], expected_version=StreamState.NO_STREAM
                )
            except WrongExpectedVersion:
                continue
            await self.store.append(
                stream_name(workflow_id),
                [history_event("forked", {"to": new_id, "cancel_old": cancel_old}, workflow_id)],
            )
            rec = RecordedEvent(
                result.first_position, stream_name(new_id), 1, self.clock.now(), started
            )
            self.launch_started(definition, rec)
            if cancel_old and not state.terminal:
                await self.cancel_workflow(workflow_id)
            _log.warning("workflow %s forked as %s", workflow_id, new_id)
            return WorkflowHandle(self, new_id)
        raise WorkflowError(f"workflow {workflow_id!r} has been forked too often")

    async def _wait_terminal(self, workflow_id: str) -> WorkflowState:
        while True:
            inst = self._live.get(workflow_id)
            if inst is not None and inst.task is not None:
                waiting: set[asyncio.Future[Any]] = {inst.done, inst.task}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if inst.done.done():
                    return inst.done.result()
                continue
            head = await self.store.head()
            state = await admin.load_state(self.store, workflow_id)
            if state is not None and (state.terminal or state.blocked):
                return state
            with contextlib.suppress(TimeoutError):
                await self.store.wait_for_new(head, timeout=1.0)
