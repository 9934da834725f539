"""Replaying a recorded history against workflow code, without a store or side effects.

:func:`replay_state` runs a workflow function with a context whose every call is answered
from the history. Nothing runs for real: as soon as the code asks for a call the history
does not answer (the instance was still in flight when the history was taken), the replay
stops there and succeeds. If the code asks for something else than the history recorded, it
raises :class:`~contexten.exceptions.NondeterminismError`. The public checker built on it is
:class:`contexten.testing.Replayer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contexten.clock import Clock
from contexten.events.envelope import Event
from contexten.exceptions import NondeterminismError, WorkflowCancelled
from contexten.resilience.retry import RetryPolicy
from contexten.store.base import Append, AppendResult, RecordedEvent
from contexten.workflows.context import WorkflowContext
from contexten.workflows.history import Op, WorkflowState, WorkflowStatus

__all__ = ["ReplayOutcome", "replay_state"]


def _describe(op: Op) -> str:
    return f"{op.kind} {op.name!r}" if op.name else op.kind


class _EndOfHistory(BaseException):
    """The workflow asked for a call past the recorded history."""


class _FrozenClock(Clock):
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        raise _EndOfHistory


class _ReplayRuntime:
    """A runtime that answers nothing live: any live call ends the replay."""

    def __init__(self, state: WorkflowState) -> None:
        self._clock = _FrozenClock(state.updated_at or datetime.now(UTC))

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def default_retry(self) -> RetryPolicy:
        return RetryPolicy.no_retries()

    @property
    def default_step_timeout(self) -> float | None:
        return None

    def go_live(self) -> None:
        raise _EndOfHistory

    def cancel_pending(self) -> bool:
        return False

    async def append(self, events: list[Event], extra: Sequence[Append] = ()) -> list[AppendResult]:
        raise _EndOfHistory

    async def wait_timer(self, fire_at: datetime) -> None:
        raise _EndOfHistory

    async def wait_event(
        self,
        pattern: str,
        match: Callable[[Event], bool] | None,
        correlation_id: str | None,
        deadline: datetime | None,
        after: int,
        consumed: set[str],
    ) -> RecordedEvent | None:
        raise _EndOfHistory

    async def start_child(self, name: str, input: Any, child_id: str) -> None:
        raise _EndOfHistory

    def set_current(self, what: str | None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay found.

    Attributes:
        workflow_id: the instance replayed.
        calls: how many durable calls the code made.
        in_flight: True when the history ended before the workflow did.
        returned: True when the workflow function returned (its result in ``result``).
        result: the returned value.
        error: what the workflow raised, if it raised (recorded failures re-raise on replay).
    """

    workflow_id: str
    calls: int
    in_flight: bool
    returned: bool
    result: Any = None
    error: BaseException | None = None


async def replay_state(fn: Callable[[Any, Any], Any], state: WorkflowState) -> ReplayOutcome:
    """Replay ``fn`` against the folded history ``state``.

    Raises:
        NondeterminismError: the code's calls diverge from the history.
    """
    ctx = WorkflowContext(_ReplayRuntime(state), state)
    wid = state.workflow_id
    try:
        result = await fn(ctx, state.input_value())
    except _EndOfHistory:
        if ctx.nondeterminism is not None:
            raise ctx.nondeterminism from None
        return ReplayOutcome(wid, ctx.seq, True, False)
    except WorkflowCancelled as e:
        return ReplayOutcome(wid, ctx.seq, False, False, error=e)
    except Exception as e:
        if ctx.nondeterminism is not None:
            raise ctx.nondeterminism from e
        if state.status is WorkflowStatus.COMPLETED:
            raise NondeterminismError(
                wid,
                ctx.seq,
                f"the history completed, but the code now raises {e!r}",
                expected="completed",
                produced=f"raise {type(e).__name__}",
            ) from e
        return ReplayOutcome(wid, ctx.seq, False, False, error=e)
    if ctx.nondeterminism is not None:
        raise ctx.nondeterminism
    if state.max_seq > ctx.seq:
        recorded = state.ops.get(ctx.seq + 1)
        raise NondeterminismError(
            wid,
            ctx.seq + 1,
            f"the code returned after {ctx.seq} call(s) but the history recorded {state.max_seq}",
            expected=_describe(recorded) if recorded else f"{state.max_seq} calls",
            produced="return",
        )
    if state.compensating and not state.cancel_requested:
        raise NondeterminismError(
            wid,
            ctx.seq,
            "the history shows the workflow failed, but the code now completes",
            expected="failure (compensating)",
            produced="return",
        )
    return ReplayOutcome(wid, ctx.seq, False, True, result=result)
