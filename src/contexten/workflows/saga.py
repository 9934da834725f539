"""Saga compensation: undo a workflow's completed steps, in reverse order, durably.

When a workflow fails (a step failed after its retries, or the workflow raised) or is
cancelled, the engine calls :func:`run_compensations` with the steps that completed and named
a ``compensate`` function. Each compensation is itself a durable step: it runs with the step's
retry policy and timeout, gets its own idempotency key (the step's key plus
``":compensate"``), and its completion is recorded, so after a crash the compensations
already done are not run again. A compensation that still fails after its retries stops the
saga: the instance ends ``failed`` with the reason, and ``retry_workflow`` redrives it from
that compensation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from contexten.clock import Clock
from contexten.events.envelope import Event
from contexten.resilience.retry import RetryPolicy
from contexten.workflows.context import SagaEntry
from contexten.workflows.history import WorkflowState, error_info, history_event
from contexten.workflows.steps import StepInfo, execute_step

__all__ = ["CompensationRuntime", "run_compensations"]


class CompensationRuntime(Protocol):
    """What compensation needs from the engine: a clock, a retry default, an append."""

    @property
    def clock(self) -> Clock:
        """The clock for retry waits."""
        ...

    @property
    def default_retry(self) -> RetryPolicy:
        """The retry policy for compensations of steps that named none."""
        ...

    @property
    def default_step_timeout(self) -> float | None:
        """Seconds per attempt for compensations of steps that named no timeout."""
        ...

    async def append(self, events: list[Event], extra: Sequence[Any] = ()) -> Any:
        """Append to the instance's history."""
        ...

    def set_current(self, what: str | None) -> None:
        """Tell the engine what the instance is doing."""


async def run_compensations(
    runtime: CompensationRuntime, state: WorkflowState, entries: Sequence[SagaEntry]
) -> dict[str, Any] | None:
    """Run the compensations of ``entries`` not yet done, newest first.

    Returns None when every compensation succeeded, else the error (a dict with ``type``,
    ``message``, ``step``, ``attempts``) of the compensation that kept failing.
    """
    wid = state.workflow_id
    for entry in reversed(entries):
        if entry.seq in state.compensations_done:
            continue
        runtime.set_current(f"compensate:{entry.name}")
        outcome = await execute_step(
            entry.compensate,
            entry.args,
            entry.kwargs,
            info=StepInfo(wid, entry.seq, entry.name, compensation=True, run=state.run),
            policy=entry.retry or runtime.default_retry,
            clock=runtime.clock,
            timeout=entry.timeout,
            default_timeout=runtime.default_step_timeout,
            extra={"result": entry.result},
        )
        if outcome.ok:
            data: dict[str, Any] = {"seq": entry.seq, "name": entry.name}
            await runtime.append([history_event("compensation_step_completed", data, wid)])
            state.compensations_done.add(entry.seq)
            continue
        assert outcome.error is not None
        error = error_info(outcome.error)
        data = {"seq": entry.seq, "name": entry.name, "error": error, "attempts": outcome.attempts}
        await runtime.append([history_event("compensation_step_failed", data, wid)])
        state.compensation_failures[entry.seq] = error
        return {
            **error,
            "message": f"compensation of step {entry.name!r} (call #{entry.seq}) failed after "
            f"{outcome.attempts} attempt(s): {error['message']}",
            "step": entry.name,
            "attempts": outcome.attempts,
        }
    return None
