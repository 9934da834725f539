"""Running one step: the idempotency key, retries on the engine's clock, an optional timeout.

A step is user code with side effects (a platform call). The engine runs it through
:func:`execute_step`, which is shared by workflow steps, saga compensations and state-machine
actions, so they all retry, time out and hand out idempotency keys the same way.

How a step gets its idempotency key: while it runs, :func:`current_step` returns a
:class:`StepInfo` whose :attr:`~StepInfo.idempotency_key` is ``"{workflow_id}:{seq}:{name}"``
(``...:compensate`` for a compensation; ``{workflow_id}#{run}:...`` from an id's second run
on). It is the same on every attempt and after a crash,
so pass it to the platform and the platform makes the effect once. For convenience, a step
function that declares a parameter named ``idempotency_key`` also receives it as that keyword.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Final

import msgspec

from contexten.clock import Clock, WallClock
from contexten.exceptions import NonRetryableError, StepTimeout, WorkflowError
from contexten.observability import tracing
from contexten.resilience.retry import RetryPolicy

__all__ = [
    "StepInfo",
    "StepOutcome",
    "accepts_keyword",
    "current_step",
    "execute_step",
    "to_json_value",
]

_current: Final[contextvars.ContextVar[StepInfo | None]] = contextvars.ContextVar(
    "contexten_current_step", default=None
)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """The step that is running: where it is, which attempt, and its idempotency key.

    Attributes:
        workflow_id: the workflow instance.
        seq: the step's call number in the instance.
        name: the step's name.
        attempt: 1 for the first attempt, 2 for the first retry...
        compensation: True while running the step's compensation.
        run: the instance's run number (a later run of the same id gets new keys).
    """

    workflow_id: str
    seq: int
    name: str
    attempt: int = 1
    compensation: bool = False
    run: int = 1

    @property
    def idempotency_key(self) -> str:
        """A key that is the same on every attempt and every replay of this step (and
        different in a later run of the same id: ``{id}#{run}:...``)."""
        owner = self.workflow_id if self.run <= 1 else f"{self.workflow_id}#{self.run}"
        key = f"{owner}:{self.seq}:{self.name}"
        return key + ":compensate" if self.compensation else key


def current_step() -> StepInfo:
    """The :class:`StepInfo` of the step running in this task.

    Raises:
        WorkflowError: called outside a workflow step.
    """
    info = _current.get()
    if info is None:
        raise WorkflowError("current_step() was called outside a workflow step")
    return info


class NotJSONError(NonRetryableError, TypeError):
    """A step returned something that is not JSON; retrying will not help."""


def to_json_value(value: Any) -> Any:
    """``value`` as it will read back from the history (JSON types only).

    The engine hands the workflow this round-tripped value live too, so a live run and a replay
    see exactly the same thing (tuples become lists, structs and dataclasses become dicts).

    Raises:
        NotJSONError: ``value`` cannot be encoded as JSON.
    """
    if value is None or type(value) in (str, int, bool):
        return value
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, OverflowError, msgspec.EncodeError) as e:
        raise NotJSONError(
            f"a step result must be JSON-encodable, got {type(value).__name__}: {e}"
        ) from e


_accepts_cache: dict[Any, frozenset[str]] = {}


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` declares a parameter ``name`` that can be passed by keyword."""
    try:
        names = _accepts_cache.get(fn)
    except TypeError:  # unhashable callable
        names = None
    if names is None:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            names = frozenset()
        else:
            names = frozenset(
                p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
        try:
            if len(_accepts_cache) > 4096:
                _accepts_cache.clear()
            _accepts_cache[fn] = names
        except TypeError:
            pass
    return name in names


_REAL_TIME: Final = WallClock()


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How :func:`execute_step` ended: ``ok`` with a JSON ``value``, or the last ``error``."""

    ok: bool
    value: Any
    error: BaseException | None
    attempts: int


async def _invoke(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _with_timeout(
    clock: Clock,
    timeout: float,
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    name: str,
) -> Any:
    work = asyncio.ensure_future(_invoke(fn, args, kwargs))
    if type(clock) is WallClock:
        # Real seconds: a timer on the loop (no second task, no asyncio.wait per step).
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                value = await work  # the deadline cancels this wait, which cancels the work
        except TimeoutError:
            if deadline.expired():
                raise StepTimeout(f"step {name!r} timed out after {timeout:g}s") from None
            raise
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if deadline.expired():  # the work ignored its cancellation and finished anyway
            raise StepTimeout(f"step {name!r} timed out after {timeout:g}s")
        return value
    timer = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise StepTimeout(f"step {name!r} timed out after {timeout:g}s")
    finally:
        for task in (work, timer):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, timer, return_exceptions=True)


async def execute_step(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    info: StepInfo,
    policy: RetryPolicy | None,
    clock: Clock,
    timeout: float | timedelta | None = None,
    default_timeout: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> StepOutcome:
    """Run ``fn`` until it succeeds or ``policy`` gives up; never raises for ``fn``'s errors.

    ``extra`` keywords (such as ``result=`` for compensations) are passed only when ``fn``
    declares them; ``idempotency_key`` likewise. Retry waits use ``clock``, so a virtual clock
    skips them. The returned value is already JSON round-tripped (see :func:`to_json_value`).
    Cancellation (``asyncio.CancelledError``) is not an error of the step: it propagates.

    ``timeout`` (the step's own) is measured on ``clock``; without one, ``default_timeout``
    (the engine's safety net against a call that hangs) is measured in real seconds, so a
    virtual clock that skips idle time never cuts short a step waiting on real I/O.
    """
    policy = policy or RetryPolicy.no_retries()
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    timer_clock = clock
    if seconds is None and default_timeout is not None:
        seconds, timer_clock = default_timeout, _REAL_TIME
    call_kwargs = dict(kwargs)
    if accepts_keyword(fn, "idempotency_key") and "idempotency_key" not in call_kwargs:
        call_kwargs["idempotency_key"] = info.idempotency_key
    for key, value in (extra or {}).items():
        if accepts_keyword(fn, key):
            call_kwargs[key] = value
    attempt = 0
    while True:
        attempt += 1
        current = info if attempt == 1 else replace(info, attempt=attempt)
        token = _current.set(current)
        span = tracing.step_span(
            info.workflow_id, info.name, attempt, compensation=info.compensation
        )
        try:
            with span:
                if seconds is None:
                    raw = await _invoke(fn, args, call_kwargs)
                else:
                    raw = await _with_timeout(
                        timer_clock, seconds, fn, args, call_kwargs, info.name
                    )
            return StepOutcome(True, to_json_value(raw), None, attempt)
        except Exception as error:
            if not policy.should_retry(attempt, error):
                return StepOutcome(False, None, error, attempt)
        finally:
            _current.reset(token)
        await clock.sleep(policy.delay(attempt))
