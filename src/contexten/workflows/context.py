"""The durable workflow context ``wf``: steps, timers, waits and recorded side effects.

A workflow is an ordinary ``async def fn(wf, input)``. Everything it does that touches the
outside world or depends on time goes through ``wf``, and each such call is *durable*: it is
numbered (``seq``), and its outcome is appended to the instance's history before the workflow
moves on. When an instance is re-executed (after a restart, or to reload it), a call whose
``seq`` is in the history returns the recorded outcome without doing anything; the first call
past the history's end goes live. Workflow code must therefore be deterministic: the same
input and the same recorded outcomes must lead to the same calls in the same order. A call
that does not match the history (another kind, another step name) raises
:class:`~contexten.exceptions.NondeterminismError`, and the engine parks the instance.
"""

from __future__ import annotations

import random as _random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgspec

from contexten.clock import Clock
from contexten.events.envelope import Event
from contexten.events.patterns import compile_pattern
from contexten.exceptions import (
    ChildWorkflowError,
    NondeterminismError,
    StepFailedError,
    WorkflowCancelled,
    WorkflowTimeoutError,
)
from contexten.observability import tracing
from contexten.resilience.retry import RetryPolicy
from contexten.store.base import Append, AppendResult, RecordedEvent
from contexten.workflows.history import (
    Op,
    WorkflowState,
    error_info,
    history_event,
    public_stream,
)
from contexten.workflows.steps import StepInfo, execute_step

__all__ = ["SagaEntry", "Workflow", "WorkflowContext", "WorkflowRuntime"]


class WorkflowRuntime(Protocol):
    """What a :class:`WorkflowContext` needs from whoever runs it (the engine, or a replayer).

    The engine's implementation appends to the store and parks on timers and waits; the
    replay checker's raises as soon as a call would go past the recorded history.
    """

    @property
    def clock(self) -> Clock:
        """The clock for timers and retry waits."""
        ...

    @property
    def default_retry(self) -> RetryPolicy:
        """The retry policy of steps that do not name one."""
        ...

    @property
    def default_step_timeout(self) -> float | None:
        """Seconds an attempt of a step that names no timeout may take (None: no limit)."""
        ...

    def go_live(self) -> None:
        """Called before a call runs for real; a replay-only runtime raises here."""

    def cancel_pending(self) -> bool:
        """Whether cancellation was asked for and not yet recorded."""
        ...

    async def append(self, events: list[Event], extra: Sequence[Append] = ()) -> list[AppendResult]:
        """Append ``events`` to the instance's history (plus ``extra`` appends, atomically)."""
        ...

    async def wait_timer(self, fire_at: datetime) -> None:
        """Park until ``fire_at``; raise :class:`WorkflowCancelled` if cancelled meanwhile."""

    async def wait_event(
        self,
        pattern: str,
        match: Callable[[Event], bool] | None,
        correlation_id: str | None,
        deadline: datetime | None,
        after: int,
        consumed: set[str],
    ) -> RecordedEvent | None:
        """Park until an event matches (the one found) or ``deadline`` passes (None)."""
        ...

    async def start_child(self, name: str, input: Any, child_id: str) -> None:
        """Start child workflow ``child_id`` unless it exists."""

    def set_current(self, what: str | None) -> None:
        """Tell the engine what the instance is doing (for ``get_workflow``)."""


@dataclass(slots=True)
class SagaEntry:
    """A completed step with a compensation: what to undo, and how."""

    seq: int
    name: str
    compensate: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    retry: RetryPolicy | None
    timeout: float | timedelta | None


_CHILD_TERMINAL = frozenset(
    {
        "contexten.workflow.completed",
        "contexten.workflow.failed",
        "contexten.workflow.compensated",
        "contexten.workflow.cancelled",
    }
)


def _callable_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        inner = getattr(fn, "func", None)  # functools.partial
        return _callable_name(inner) if callable(inner) else type(fn).__qualname__
    return str(name)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class WorkflowContext:
    """The durable context a workflow function receives as ``wf``.

    Every method is a durable call: recorded in the instance's history, replayed from it.
    Read time, ids and randomness only through :meth:`now`, :meth:`uuid4` and :meth:`random`.
    """

    def __init__(self, runtime: WorkflowRuntime, state: WorkflowState) -> None:
        self._rt = runtime
        self._state = state
        self._seq = 0
        self._pending: list[Event] = []
        self._consumed = set(state.consumed)
        self.compensations: list[SagaEntry] = []
        """Completed steps that have a compensation, in completion order."""
        self.nondeterminism: NondeterminismError | None = None
        """Set when a call diverged from the history (the engine parks the instance)."""
        self.cancelled = False
        """Set once :class:`WorkflowCancelled` was raised into the workflow."""
        self.last_failure: tuple[int, StepFailedError] | None = None
        """The last step failure raised into the workflow, with its call number."""

    @property
    def workflow_id(self) -> str:
        """This instance's id."""
        return self._state.workflow_id

    @property
    def name(self) -> str:
        """The workflow's registered name."""
        return self._state.name

    @property
    def version(self) -> str:
        """The workflow version this instance started with."""
        return self._state.version

    @property
    def seq(self) -> int:
        """How many durable calls the workflow has made so far."""
        return self._seq

    @property
    def is_replaying(self) -> bool:
        """True while the calls being made are answered from the recorded history."""
        return self._seq < self._state.max_seq

    # -- plumbing -------------------------------------------------------------------------

    def _next(self, kind: str, name: str) -> tuple[int, Op | None]:
        self._seq += 1
        seq = self._seq
        op = self._state.ops.get(seq)
        if op is not None and (op.kind != kind or (name != op.name and op.name)):
            recorded = f"{op.kind} {op.name!r}" if op.name else op.kind
            asked = f"{kind} {name!r}" if name else kind
            self.nondeterminism = NondeterminismError(
                self.workflow_id,
                seq,
                f"the code asked for {asked} but the history recorded {recorded}; "
                "the workflow code changed under an in-flight instance",
                expected=recorded,
                produced=asked,
            )
            raise self.nondeterminism
        return seq, op

    def _event(self, kind: str, data: dict[str, Any]) -> Event:
        return history_event(kind, data, self.workflow_id)

    async def _append(self, events: list[Event], extra: Sequence[Append] = ()) -> None:
        if self._pending:
            events = [*self._pending, *events]
            self._pending = []
        await self._rt.append(events, extra)

    async def _before_live(self) -> None:
        """Checks before a call runs for real: replay-only stop, cancellation, side effects."""
        self._rt.go_live()
        if self._state.cancel_requested or self._rt.cancel_pending():
            if not self._state.cancel_requested:
                await self._append([self._event("cancel_requested", {"reason": "cancelled"})])
                self._state.cancel_requested = True
            self.cancelled = True
            raise WorkflowCancelled(f"workflow {self.workflow_id!r} is being cancelled")

    async def flush(self) -> None:
        """Record pending side effects (``now``/``uuid4``/``random`` values) now."""
        if self._pending:
            await self._append([])

    # -- steps ----------------------------------------------------------------------------

    async def step(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        compensate: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once, durably, and return its (JSON) result.

        The result is recorded before this returns; on replay the recorded result comes back
        without running ``fn``. ``fn`` may be sync or async; it gets its idempotency key from
        :func:`~contexten.workflows.current_step` (or as keyword ``idempotency_key`` if it
        declares one).

        Args:
            fn: the step.
            *args: positional arguments for ``fn`` (and for ``compensate``).
            name: the step's name in the history (default: ``fn``'s qualified name).
            retry: how to retry ``fn`` (default: the engine's ``default_retry``;
                ``RetryPolicy.no_retries()`` to try once).
            timeout: seconds (or timedelta) per attempt; a timed-out attempt is a failure,
                retried by ``retry`` (default: the engine's ``default_step_timeout``, so a
                platform call that hangs fails the step instead of stalling the instance).
            compensate: called with the same arguments (plus ``result=`` if it declares it)
                to undo this step if the workflow fails or is cancelled later.
            **kwargs: keyword arguments for ``fn`` (and for ``compensate``).

        Raises:
            StepFailedError: ``fn`` failed after its retries (also on replay).
        """
        step_name = name or _callable_name(fn)
        seq, op = self._next("step", step_name)
        if op is not None and op.done:
            if not op.ok:
                self.last_failure = (seq, _step_error(step_name, op))
                raise self.last_failure[1]
            self._remember(seq, step_name, compensate, args, kwargs, op.result, retry, timeout)
            return op.result
        await self._before_live()
        await self.flush()
        self._rt.set_current(f"step:{step_name}")
        outcome = await execute_step(
            fn,
            args,
            kwargs,
            info=StepInfo(self.workflow_id, seq, step_name, run=self._state.run),
            policy=retry or self._rt.default_retry,
            clock=self._rt.clock,
            timeout=timeout,
            default_timeout=self._rt.default_step_timeout,
        )
        if not outcome.ok:
            assert outcome.error is not None
            error = error_info(outcome.error)
            data = {"seq": seq, "name": step_name, "error": error, "attempts": outcome.attempts}
            await self._append([self._event("step_failed", data)])
            failed = Op("step", step_name, True, False, None, error, outcome.attempts)
            self._state.ops[seq] = failed
            self.last_failure = (seq, _step_error(step_name, failed))
            raise self.last_failure[1] from outcome.error
        data = {"seq": seq, "name": step_name, "result": outcome.value}
        await self._append([self._event("step_completed", data)])
        self._remember(seq, step_name, compensate, args, kwargs, outcome.value, retry, timeout)
        return outcome.value

    def _remember(
        self,
        seq: int,
        name: str,
        compensate: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        retry: RetryPolicy | None,
        timeout: float | timedelta | None,
    ) -> None:
        if compensate is not None:
            entry = SagaEntry(seq, name, compensate, args, kwargs, result, retry, timeout)
            self.compensations.append(entry)

    # -- timers ---------------------------------------------------------------------------

    async def sleep(self, duration: float | timedelta) -> None:
        """Wait ``duration`` (seconds or timedelta), durably: the timer survives restarts."""
        seconds = _seconds(duration)
        await self._timer(lambda: self._rt.clock.now() + timedelta(seconds=seconds))

    async def sleep_until(self, when: datetime) -> None:
        """Wait until ``when``, durably (at once if it has passed, also after a restart)."""
        await self._timer(lambda: when)

    async def _timer(self, fire_at_fn: Callable[[], datetime]) -> None:
        seq, op = self._next("sleep", "")
        if op is not None and op.done:
            return
        await self._before_live()
        if op is None:
            fire_at = fire_at_fn()
            data = {"seq": seq, "fire_at": fire_at.isoformat()}
            await self._append([self._event("timer_started", data)])
        else:
            assert op.fire_at is not None
            fire_at = op.fire_at
        self._rt.set_current("sleep")
        try:
            await self._rt.wait_timer(fire_at)
        except WorkflowCancelled:
            await self._before_live()  # records the cancellation, raises again
            raise
        await self._append([self._event("timer_fired", {"seq": seq})])

    # -- waits ----------------------------------------------------------------------------

    async def wait_for(
        self,
        pattern: str,
        *,
        match: Callable[[Event], bool] | None = None,
        correlation_id: str | None = None,
        timeout: float | timedelta | None = None,
    ) -> Event:
        """Wait for an event of type ``pattern`` in the global log, and return it.

        An event that arrived after the workflow started (and was not returned by an earlier
        wait of this instance) counts, so nothing that happened "too early" is missed.

        Args:
            pattern: an event-type pattern (``github.pull_request.*``).
            match: a predicate the event must also satisfy (pure: it runs again on replay).
            correlation_id: the event's ``correlation_id`` must equal this.
            timeout: give up after this long (seconds or timedelta).

        Raises:
            WorkflowTimeoutError: the timeout passed first (catch it to carry on).
        """
        compile_pattern(pattern)  # fail on a bad pattern before recording anything
        seq, op = self._next("wait", pattern)
        if op is not None and op.done:
            return self._matched(seq, op, pattern)
        if op is None:
            await self._before_live()
            deadline = None
            if timeout is not None:
                deadline = self._rt.clock.now() + timedelta(seconds=_seconds(timeout))
            data = {
                "seq": seq,
                "pattern": pattern,
                "correlation_id": correlation_id,
                "deadline": deadline.isoformat() if deadline else None,
            }
            await self._append([self._event("wait_started", data)])
        else:
            await self._before_live()
            deadline = op.deadline
        self._rt.set_current(f"wait:{pattern}")
        try:
            rec = await self._rt.wait_event(
                pattern, match, correlation_id, deadline, self._state.after, self._consumed
            )
        except WorkflowCancelled:
            await self._before_live()
            raise
        if rec is None:
            await self._append([self._event("wait_timed_out", {"seq": seq})])
            raise WorkflowTimeoutError(f"wait_for({pattern!r}) timed out (call #{seq})")
        event_data = msgspec.to_builtins(rec.event)
        data = {"seq": seq, "event": event_data, "position": rec.position}
        await self._append([self._event("wait_matched", data)])
        self._consumed.add(rec.event.id)
        return rec.event

    def _matched(self, seq: int, op: Op, pattern: str) -> Event:
        if not op.ok:
            raise WorkflowTimeoutError(f"wait_for({pattern!r}) timed out (call #{seq})")
        event = msgspec.convert(op.result, Event)
        self._consumed.add(event.id)
        return event

    # -- patches ----------------------------------------------------------------------------

    def patched(self, patch_id: str) -> bool:
        """Whether this instance takes the new path of change ``patch_id`` (Temporal's model).

        Wrap a small change inside one version as ``if wf.patched("id"): new else: old``.
        True for an instance that reaches this point with this code for the first time
        (new instances, and in-flight ones that had not got this far), recorded in its
        history so every replay agrees; False for an instance whose history already went
        past this point on the old path. A marker takes no call number, so histories
        recorded before the patch existed replay unchanged.

        Cleaning up, once no instance that took the old path is left open: replace the
        ``if`` with :meth:`deprecate_patch` and the new path alone; later still, delete the
        ``deprecate_patch`` call too (markers never constrain a replay).
        """
        if patch_id in self._state.patches:
            return True
        if self.is_replaying:
            return False
        self._state.patches[patch_id] = self._seq
        self._pending.append(self._event("patched", {"patch_id": patch_id, "seq": self._seq}))
        return True

    def deprecate_patch(self, patch_id: str) -> None:
        """Mark that only the new path of ``patch_id`` remains (see :meth:`patched`).

        Still records the marker for instances reaching this point live, so engines that
        run the previous code (with the ``if wf.patched(...)``) during a rolling deploy take
        the new path on these histories too.
        """
        self.patched(patch_id)

    # -- recorded side effects --------------------------------------------------------------

    def _side_effect(self, kind: str, make: Callable[[], Any]) -> Any:
        seq, op = self._next(kind, "")
        if op is not None:
            return op.result
        value = make()
        self._pending.append(self._event("side_effect", {"seq": seq, "kind": kind, "value": value}))
        return value

    def now(self) -> datetime:
        """The current time (from the engine's clock), recorded so replays see the same."""
        value = self._side_effect("now", lambda: self._rt.clock.now().isoformat())
        return datetime.fromisoformat(value)

    def uuid4(self) -> uuid.UUID:
        """A random UUID, recorded so replays see the same."""
        return uuid.UUID(self._side_effect("uuid4", lambda: str(uuid.uuid4())))

    def random(self) -> float:
        """A random float in [0, 1), recorded so replays see the same."""
        return float(self._side_effect("random", _random.random))

    # -- events and children --------------------------------------------------------------

    async def emit(self, event: Event, *, stream: str | None = None) -> None:
        """Append ``event`` to the store once, however often the workflow is replayed.

        The event and its record in the history are written in one commit. It goes to
        ``stream`` (default: the instance's public stream ``workflow-{id}``).
        """
        seq, op = self._next("emit", event.type)
        if op is not None:
            return
        await self._before_live()
        target = stream or public_stream(self.workflow_id)
        event = tracing.inject(event)
        data = {"seq": seq, "event_id": event.id, "type": event.type, "stream": target}
        await self._append([self._event("event_emitted", data)], [Append(target, [event])])

    async def run_child(
        self, name: str, input: Any = None, *, workflow_id: str | None = None
    ) -> Any:
        """Start workflow ``name`` as a child, wait for it, and return its result.

        The child's id defaults to ``"{parent_id}/{seq}"``, so a replay finds the same child.

        Raises:
            ChildWorkflowError: the child ended failed, compensated or cancelled.
        """
        seq, op = self._next("child", name)
        if op is None:
            await self._before_live()
            await self.flush()
            child_id = workflow_id or f"{self._state.run_key}/{seq}"
            await self._rt.start_child(name, input, child_id)
            data = {"seq": seq, "name": name, "child_id": child_id}
            await self._append([self._event("child_started", data)])
        elif op.done:
            return _child_outcome(op)
        else:
            await self._before_live()
            assert op.child_id is not None
            child_id = op.child_id
        self._rt.set_current(f"child:{name}")
        try:
            rec = await self._rt.wait_event(
                "contexten.workflow.*",
                lambda e: e.type in _CHILD_TERMINAL and e.data.get("workflow_id") == child_id,
                None,
                None,
                self._state.after,
                self._consumed,
            )
        except WorkflowCancelled:
            await self._before_live()
            raise
        assert rec is not None
        done = rec.event.data
        data = {
            "seq": seq,
            "name": name,
            "child_id": child_id,
            "status": done.get("status"),
            "result": done.get("result"),
            "error": done.get("error"),
        }
        await self._append([self._event("child_finished", data)])
        self._consumed.add(rec.event.id)
        finished = Op("child", name, True, done.get("status") == "completed", done.get("result"))
        finished.child_id = child_id
        finished.error = {"status": done.get("status"), "error": done.get("error")}
        return _child_outcome(finished)


def _step_error(name: str, op: Op) -> StepFailedError:
    error = op.error or {}
    return StepFailedError(
        name, str(error.get("type", "Exception")), str(error.get("message", "")), op.attempts
    )


def _child_outcome(op: Op) -> Any:
    if op.ok:
        return op.result
    info = op.error or {}
    raise ChildWorkflowError(op.child_id or "", str(info.get("status")), info.get("error"))


Workflow = WorkflowContext
"""The name workflow code uses for the type of ``wf``."""
