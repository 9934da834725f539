"""One live function-workflow instance: its runtime for ``wf``, and its run loop.

The instance owns its history stream while it runs: every append states the stream version
the instance last saw, so a second engine (another process) can never advance the same
instance behind its back. When an append loses that race the instance either absorbs the
newcomers (a cancellation request is the only thing outsiders append) and appends again, or
reloads the stream and re-executes the workflow from the top, which replays quickly from the
history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from contexten.clock import Clock
from contexten.events.envelope import Event
from contexten.events.patterns import compile_pattern
from contexten.exceptions import (
    NondeterminismError,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    WorkflowCancelled,
    WrongExpectedVersion,
)
from contexten.observability import tracing
from contexten.resilience.retry import RetryPolicy
from contexten.store.base import Append, AppendResult, RecordedEvent
from contexten.workflows._limits import Slot
from contexten.workflows._waits import Waiter
from contexten.workflows.context import WorkflowContext
from contexten.workflows.history import (
    CANCEL_REQUESTED,
    FORKED,
    STEP_COMPLETED,
    STEP_FAILED,
    TRIGGER_ABSORBED,
    WorkflowState,
    WorkflowStatus,
    apply,
    error_info,
    fast_id,
    fold,
    history_event,
    public_stream,
    stream_name,
)
from contexten.workflows.saga import run_compensations
from contexten.workflows.steps import to_json_value

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowDefinition, WorkflowEngine

__all__ = ["Reload", "WorkflowInstance", "lifecycle_event"]

_log = logging.getLogger("contexten.workflows")

_ABSORBABLE = frozenset({CANCEL_REQUESTED, TRIGGER_ABSORBED, FORKED})
_STEP_ENDS = frozenset({STEP_COMPLETED, STEP_FAILED})


class Reload(BaseException):
    """The history moved under the instance: reload it and re-execute from the top.

    A ``BaseException`` so that workflow code catching ``Exception`` cannot swallow it.
    """


def lifecycle_event(state: WorkflowState, kind: str, data: dict[str, Any]) -> Event:
    """The public ``contexten.workflow.{kind}`` event for an instance that ended."""
    correlation_id = None
    if state.input_is_event and isinstance(state.input, dict):
        correlation_id = state.input.get("correlation_id")
    body: dict[str, Any] = {"workflow_id": state.workflow_id, "name": state.name, "status": kind}
    body.update(data)
    return Event(
        type=f"contexten.workflow.{kind}",
        source="contexten.workflows",
        subject=state.workflow_id,
        correlation_id=correlation_id,
        causation_id=state.trigger_event_id,
        data=body,
        id=fast_id(),
    )


class WorkflowInstance:
    """A function workflow being executed by a :class:`WorkflowEngine`."""

    def __init__(
        self, engine: WorkflowEngine, definition: WorkflowDefinition, state: WorkflowState
    ) -> None:
        self.engine = engine
        self.definition = definition
        self.state = state
        self.workflow_id = state.workflow_id
        self.stream = stream_name(state.workflow_id)
        self.current: str | None = None
        self.done: asyncio.Future[WorkflowState] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self._cancel = False
        self._blocker: asyncio.Future[Any] | None = None
        self._lock = asyncio.Lock()
        self._step_started: float | None = None  # when the running live step began
        self.slot: Slot = definition.limiter.slot(
            definition.slot_key(state),
            holder=state.workflow_id,
            store=engine.store,
            owner=engine.ownership.owner,
        )

    # -- WorkflowRuntime --------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.engine.clock

    @property
    def default_retry(self) -> RetryPolicy:
        return self.engine.default_retry

    @property
    def default_step_timeout(self) -> float | None:
        return self.engine.default_step_timeout

    def go_live(self) -> None:
        return None

    def cancel_pending(self) -> bool:
        return self._cancel

    def set_current(self, what: str | None) -> None:
        self.current = what
        if what is not None and what.startswith("step:"):
            self._step_started = time.monotonic()

    async def append(self, events: list[Event], extra: Sequence[Append] = ()) -> list[AppendResult]:
        if self._step_started is not None and events and events[-1].type in _STEP_ENDS:
            self.engine.stats.record_step(
                self.state.name, events[-1].data["name"], time.monotonic() - self._step_started
            )
            self._step_started = None
        async with self._lock:
            while True:
                appends = [Append(self.stream, events, self.state.stream_version), *extra]
                try:
                    results = await self.engine.store.commit(appends)
                except WrongExpectedVersion as e:
                    if e.stream != self.stream:
                        raise
                    await self._absorb()
                    continue
                self.state.stream_version = results[0].version
                return results

    async def _absorb(self) -> None:
        """Take in what others appended; reload unless it was only a cancellation request."""
        newer = await self.engine.store.read_stream(
            self.stream, from_version=self.state.stream_version + 1
        )
        if not newer or any(r.event.type not in _ABSORBABLE for r in newer):
            raise Reload
        for rec in newer:
            apply(self.state, rec)
        if self.state.cancel_requested:
            self._cancel = True

    async def wait_timer(self, fire_at: datetime) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = asyncio.ensure_future(self._fire_at(fut, fire_at))
        await self._park(fut, timer)

    async def wait_event(
        self,
        pattern: str,
        match: Callable[[Event], bool] | None,
        correlation_id: str | None,
        deadline: datetime | None,
        after: int,
        consumed: set[str],
    ) -> RecordedEvent | None:
        if self._cancel:
            raise WorkflowCancelled(f"workflow {self.workflow_id!r} is being cancelled")
        waits = self.engine.waits
        waiter = Waiter(compile_pattern(pattern), match, correlation_id, after, consumed)
        await self.slot.release()
        self._blocker = waiter.future
        timer = asyncio.ensure_future(self._fire_at(waiter.future, deadline)) if deadline else None
        try:
            found = await waits.find(waiter)
            if found is not None:
                return found
            return await waiter.future
        finally:
            waits.remove(waiter)
            self._blocker = None
            if timer is not None:
                timer.cancel()
            await self.slot.acquire()

    async def _park(self, fut: asyncio.Future[Any], timer: asyncio.Future[Any]) -> None:
        if self._cancel:
            timer.cancel()
            raise WorkflowCancelled(f"workflow {self.workflow_id!r} is being cancelled")
        await self.slot.release()
        self._blocker = fut
        try:
            await fut
        finally:
            self._blocker = None
            timer.cancel()
            await self.slot.acquire()

    async def _fire_at(self, fut: asyncio.Future[Any], when: datetime) -> None:
        stats = self.engine.stats
        stats.timers_pending += 1
        try:
            await self.engine.clock.sleep_until(when)
        finally:
            stats.timers_pending -= 1
        if not fut.done():
            fut.set_result(None)

    async def start_child(self, name: str, input: Any, child_id: str) -> None:
        await self.engine.start_workflow(name, input, child_id, parent_id=self.workflow_id)

    # -- control from outside -----------------------------------------------------------------

    def request_cancel(self) -> None:
        """Cancel at the next durable call; wake the instance if it sleeps or waits."""
        if self.state.terminal or self._cancel:
            return
        self._cancel = True
        blocker = self._blocker
        if blocker is not None and not blocker.done():
            blocker.set_exception(
                WorkflowCancelled(f"workflow {self.workflow_id!r} is being cancelled")
            )

    # -- the run loop -------------------------------------------------------------------------

    def _trigger_traceparent(self) -> str | None:
        """The trace of the event that started the instance (its steps' spans join it)."""
        value = self.state.input
        if self.state.input_is_event and isinstance(value, dict):
            found = value.get("traceparent")
            return found if isinstance(found, str) else None
        return None

    async def run(self) -> None:
        """Execute until the instance ends; reload and re-execute when the history moved."""
        backoff = 0.1
        try:
            while True:
                try:
                    with tracing.attach_event_context(self._trigger_traceparent()):
                        await self._execute()
                    return
                except Reload:
                    pass
                except StoreError as e:
                    _log.warning("workflow %s: store error, retrying: %s", self.workflow_id, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                await self.slot.release()
                await self._reload()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception(
                "workflow %s: engine error; the instance stays as recorded", self.workflow_id
            )
        finally:
            try:
                await self.slot.release()
            finally:
                self.engine._forget(self)

    async def _reload(self) -> None:
        """Read the instance's history again (after a :class:`Reload` or a store error).

        While the store stays unreachable (a PostgreSQL restart outlasting the first retry)
        the read is retried with backoff: giving up here would leave the instance unfinished
        with a live owner, so no other engine would adopt it. A closed store (the engine is
        stopping) ends the run; the history stays as recorded for the next start.
        """
        backoff = 0.1
        while True:
            try:
                records = await self.engine.store.read_stream(self.stream)
                break
            except StoreClosed:
                raise
            except StoreError as e:
                _log.warning(
                    "workflow %s: store error reloading its history, retrying: %s",
                    self.workflow_id,
                    e,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self.state = fold(records, self.workflow_id)
        if self.state.cancel_requested:
            self._cancel = True

    async def _execute(self) -> None:
        state = self.state
        if state.terminal or state.blocked:
            self._finish()
            return
        await self.slot.acquire()
        ctx = WorkflowContext(self, state)
        error: Exception | None = None
        result: Any = None
        try:
            result = await self.definition.fn(ctx, state.input_value())
        except StoreUnavailable:
            raise  # the store failed, not the workflow: run() reloads and carries on
        except Exception as e:
            error = e
        if ctx.nondeterminism is not None:
            await self._block(ctx, ctx.nondeterminism)
            return
        cancelled = ctx.cancelled or state.cancel_requested or self._cancel
        if error is None and not cancelled:
            problem = self._completion_problem(ctx, state)
            if problem is not None:
                await self._block(ctx, problem)
                return
            try:
                value = to_json_value(result)
            except TypeError as e:
                error = e
            else:
                await self._end(ctx, "completed", {"result": value})
                return
        if error is not None and not cancelled:
            err = error_info(error)
        else:
            err = {
                "type": "cancelled",
                "message": "the workflow was cancelled",
                "non_retryable": True,
            }
        if ctx.compensations or state.compensating:
            await self._compensate(ctx, state, "cancelled" if cancelled else "failed", err)
            return
        data: dict[str, Any] = {"error": err}
        if ctx.last_failure is not None and error is ctx.last_failure[1]:
            data["failed_seq"] = ctx.last_failure[0]
        await self._end(ctx, "cancelled" if cancelled else "failed", data)

    def _completion_problem(
        self, ctx: WorkflowContext, state: WorkflowState
    ) -> NondeterminismError | None:
        if state.max_seq > ctx.seq:
            return NondeterminismError(
                self.workflow_id,
                ctx.seq + 1,
                f"the workflow returned after {ctx.seq} call(s) but the history recorded "
                f"{state.max_seq}; the workflow code changed under an in-flight instance",
            )
        if state.compensating:
            return NondeterminismError(
                self.workflow_id,
                ctx.seq,
                "the history shows the workflow failed and was compensating, but the code "
                "now completes; the workflow code changed under an in-flight instance",
            )
        return None

    async def _compensate(
        self, ctx: WorkflowContext, state: WorkflowState, reason: str, err: dict[str, Any]
    ) -> None:
        if not state.compensating:
            started = history_event(
                "compensation_started", {"reason": reason, "error": err}, self.workflow_id
            )
            await ctx._append([started])
            state.compensating = True
            state.compensation_reason = reason
            state.error = err
        reason = state.compensation_reason or reason
        failure = await run_compensations(self, state, ctx.compensations)
        if failure is not None:
            await self._end(ctx, "failed", {"error": failure})
        elif reason == "cancelled":
            await self._end(ctx, "cancelled", {"error": state.error})
        else:
            await self._end(ctx, "compensated", {"error": state.error})

    async def _block(self, ctx: WorkflowContext, problem: NondeterminismError) -> None:
        """Stop an instance whose code diverged from its history: ``blocked``, not failed.

        Nothing more runs (no compensation: the code that would run it is what diverged);
        an operator redrives it after fixing the code, or migrates it to another version.
        """
        state = self.state
        error = error_info(problem)
        data = {"reason": "nondeterminism", "error": error, "version": state.version}
        event = history_event("blocked", data, self.workflow_id)
        public = lifecycle_event(state, "blocked", {"error": error, "version": state.version})
        await ctx._append([event], [Append(public_stream(self.workflow_id), [public])])
        state.blocked_from = state.status
        state.status = WorkflowStatus.BLOCKED
        state.blocked_reason = "nondeterminism"
        state.error = error
        self.engine.stats.blocked[state.name] += 1
        _log.error("workflow %s blocked: %s", self.workflow_id, problem)
        self._finish()

    async def _end(self, ctx: WorkflowContext, kind: str, data: dict[str, Any]) -> None:
        state = self.state
        event = history_event(kind, data, self.workflow_id)
        public_data = {k: v for k, v in data.items() if k in ("result", "error")}
        public = lifecycle_event(state, kind, public_data)
        await ctx._append([event], [Append(public_stream(self.workflow_id), [public])])
        state.status = WorkflowStatus(kind)
        state.result = data.get("result")
        state.error = data.get("error")
        state.parked = bool(data.get("parked", False))
        self.engine.stats.record_end(state, kind, data)
        if state.parked:
            _log.error("workflow %s parked: %s", self.workflow_id, state.error)
        self._finish()

    def _finish(self) -> None:
        self.current = None
        if not self.done.done():
            self.done.set_result(self.state)
