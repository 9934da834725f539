"""Circuit breaker: stop calling a platform that keeps failing, probe it, resume when it heals.

The classic three states::

    CLOSED ──(failure_threshold consecutive failures)──▶ OPEN
    OPEN ──(reset_timeout elapsed)──▶ HALF_OPEN (up to half_open_max_calls trial calls)
    HALF_OPEN ──(success_threshold successes)──▶ CLOSED
    HALF_OPEN ──(any failure)──▶ OPEN (the timer starts again)

Thresholds are data (:class:`BreakerConfig`); time comes from a :class:`~contexten.clock.Clock`
so tests skip it. The permit API (:meth:`CircuitBreaker.allow` then :meth:`record_success` /
:meth:`record_failure`) is synchronous and cheap; :meth:`CircuitBreaker.call` wraps an
awaitable for the common case. :meth:`CircuitBreaker.health` is what ``/readyz`` and metrics
read.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from contexten.clock import Clock, WallClock
from contexten.exceptions import CircuitOpen

__all__ = ["BreakerConfig", "BreakerHealth", "BreakerState", "CircuitBreaker"]

T = TypeVar("T")


class BreakerState(enum.StrEnum):
    """Where a breaker is; the string values are what health reports and metrics show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """A breaker's thresholds.

    Attributes:
        failure_threshold: consecutive failures (while closed) that open the breaker.
        reset_timeout: seconds the breaker stays open before it lets trial calls through.
        half_open_max_calls: trial calls allowed in flight at once while half-open.
        success_threshold: successful trial calls needed to close again.
    """

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if self.reset_timeout < 0:
            raise ValueError("reset_timeout must be >= 0")
        if self.half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        if self.success_threshold < 1:
            raise ValueError("success_threshold must be >= 1")


@dataclass(frozen=True, slots=True)
class BreakerHealth:
    """A snapshot of a breaker for health checks and metrics.

    Attributes:
        name: the breaker's name (e.g. ``"github"``).
        state: its current state.
        consecutive_failures: failures since the last success.
        retry_after: seconds until an open breaker lets a trial call through (0 otherwise).
        opened: how many times it has opened since it was created.
        rejected: calls refused while open or while half-open trials were busy.
    """

    name: str
    state: BreakerState
    consecutive_failures: int
    retry_after: float
    opened: int
    rejected: int

    @property
    def available(self) -> bool:
        """Whether a call made now could go through (closed, or half-open)."""
        return self.state is not BreakerState.OPEN


def _default_is_failure(error: BaseException) -> bool:
    # An error the caller caused (non_retryable: a 4xx validation error) says nothing about
    # the platform's health; anything else does.
    return not getattr(error, "non_retryable", False)


class CircuitBreaker:
    """A circuit breaker for one dependency (one platform, usually).

    Args:
        name: shown in errors, health and metrics.
        config: thresholds.
        clock: time source (default: the wall clock).
        is_failure: which exceptions count against the platform (default: every exception
            without a truthy ``non_retryable`` attribute).
        platform: put on :class:`~contexten.exceptions.CircuitOpen` errors.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        is_failure: Callable[[BaseException], bool] = _default_is_failure,
        platform: str = "",
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock or WallClock()
        self._is_failure = is_failure
        self._platform = platform or name
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._in_flight_trials = 0
        self._opened_at = 0.0
        self._opened = 0
        self._rejected = 0
        self._generation = 0
        self._listeners: list[Callable[[BreakerState, BreakerState], None]] = []

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose timeout passed reads as half-open)."""
        self._tick()
        return self._state

    def on_state_change(self, listener: Callable[[BreakerState, BreakerState], None]) -> None:
        """Call ``listener(old, new)`` on every transition (for metrics and events)."""
        self._listeners.append(listener)

    def health(self) -> BreakerHealth:
        """A snapshot for ``/readyz`` and metrics."""
        state = self.state
        retry_after = 0.0
        if state is BreakerState.OPEN:
            retry_after = max(
                self._opened_at + self.config.reset_timeout - self._clock.monotonic(), 0.0
            )
        return BreakerHealth(
            name=self.name,
            state=state,
            consecutive_failures=self._failures,
            retry_after=retry_after,
            opened=self._opened,
            rejected=self._rejected,
        )

    def allow(self) -> int:
        """Take a permit for one call, or raise :class:`CircuitOpen`.

        Returns the permit, to hand back to :meth:`record_success`, :meth:`record_failure` or
        :meth:`release` (each permit must be settled once). A permit taken before the breaker
        last changed state is stale: its outcome is ignored, so a slow call started before an
        outage cannot count as a half-open trial.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return self._generation
        if (
            state is BreakerState.HALF_OPEN
            and self._in_flight_trials < self.config.half_open_max_calls
        ):
            self._in_flight_trials += 1
            return self._generation
        self._rejected += 1
        raise CircuitOpen(self.name, self.health().retry_after, platform=self._platform)

    def _stale(self, permit: int | None) -> bool:
        return permit is not None and permit != self._generation

    def record_success(self, permit: int | None = None) -> None:
        """Settle a permit whose call succeeded."""
        if self._stale(permit):
            return
        if self._state is BreakerState.HALF_OPEN:
            self._in_flight_trials = max(self._in_flight_trials - 1, 0)
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._transition(BreakerState.CLOSED)
        else:
            self._failures = 0

    def record_failure(self, error: BaseException | None = None, permit: int | None = None) -> None:
        """Settle a permit whose call failed. An ``error`` that ``is_failure`` does not count
        (a 4xx: the platform answered) settles it without a verdict."""
        if self._stale(permit):
            return
        if error is not None and not self._is_failure(error):
            self.release(permit)
            return
        if self._state is BreakerState.HALF_OPEN:
            self._in_flight_trials = max(self._in_flight_trials - 1, 0)
            self._open()
            return
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open()

    def release(self, permit: int | None = None) -> None:
        """Settle a permit without a verdict (the call was cancelled, or said nothing about
        the platform's health)."""
        if self._stale(permit):
            return
        if self._state is BreakerState.HALF_OPEN:
            self._in_flight_trials = max(self._in_flight_trials - 1, 0)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` through the breaker: fail fast while open, record the outcome."""
        permit = self.allow()
        try:
            result = await fn()
        except Exception as error:
            self.record_failure(error, permit)
            raise
        except BaseException:
            self.release(permit)
            raise
        self.record_success(permit)
        return result

    def reset(self) -> None:
        """Force the breaker closed (an operator's override)."""
        self._transition(BreakerState.CLOSED)

    def _open(self) -> None:
        self._opened_at = self._clock.monotonic()
        self._opened += 1
        self._transition(BreakerState.OPEN)

    def _tick(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock.monotonic() - self._opened_at >= self.config.reset_timeout
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._successes = 0
        self._in_flight_trials = 0
        if new is BreakerState.CLOSED:
            self._failures = 0
        if old is not new:
            for listener in self._listeners:
                listener(old, new)
