"""Circuit breaker: unit behaviour and a Hypothesis stateful test against a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contexten.clock import Clock
from contexten.exceptions import CircuitOpen, PlatformRequestError, PlatformUnavailable
from contexten.resilience.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker


class ManualClock(Clock):
    """A synchronous test clock: time moves only by ``advance``."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_opens_after_threshold_and_fails_fast() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "github", BreakerConfig(failure_threshold=3, reset_timeout=10), clock=clock
    )
    transitions: list[tuple[BreakerState, BreakerState]] = []
    breaker.on_state_change(lambda old, new: transitions.append((old, new)))
    for _ in range(3):
        breaker.record_failure(PlatformUnavailable("503"), breaker.allow())
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as raised:
        breaker.allow()
    assert raised.value.retry_after == pytest.approx(10)
    health = breaker.health()
    assert (health.state, health.opened, health.rejected, health.available) == (
        BreakerState.OPEN,
        1,
        1,
        False,
    )

    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    trial = breaker.allow()
    with pytest.raises(CircuitOpen):
        breaker.allow()  # one trial at a time
    breaker.record_success(trial)
    assert breaker.state is BreakerState.CLOSED
    assert transitions == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_client_errors_do_not_count() -> None:
    breaker = CircuitBreaker("linear", BreakerConfig(failure_threshold=1))
    breaker.record_failure(PlatformRequestError("422"), breaker.allow())
    assert breaker.state is BreakerState.CLOSED


def test_success_resets_the_count_and_half_open_failure_reopens() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("x", BreakerConfig(failure_threshold=2, reset_timeout=5), clock=clock)
    breaker.record_failure(permit=breaker.allow())
    breaker.record_success(breaker.allow())
    breaker.record_failure(permit=breaker.allow())
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(permit=breaker.allow())
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    breaker.record_failure(permit=breaker.allow())
    assert breaker.state is BreakerState.OPEN
    assert breaker.health().retry_after == pytest.approx(5)


async def test_call_wraps_an_awaitable() -> None:
    breaker = CircuitBreaker("x", BreakerConfig(failure_threshold=1))

    async def ok() -> int:
        return 7

    async def boom() -> int:
        raise PlatformUnavailable("down")

    assert await breaker.call(ok) == 7
    with pytest.raises(PlatformUnavailable):
        await breaker.call(boom)
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)


def test_stale_permit_is_not_a_trial() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("x", BreakerConfig(failure_threshold=1, reset_timeout=1), clock=clock)
    slow = breaker.allow()
    breaker.record_failure(permit=breaker.allow())
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(slow)  # started before the outage: says nothing now
    assert breaker.state is BreakerState.HALF_OPEN


# -- stateful ----------------------------------------------------------------------------------


@dataclass
class Model:
    config: BreakerConfig
    state: str = "closed"
    failures: int = 0
    successes: int = 0
    trials: int = 0
    opened_at: float = 0.0
    generation: int = 0
    permits: list[int] = field(default_factory=list)

    def go(self, state: str, now: float) -> None:
        if state != self.state:
            self.generation += 1
        self.state = state
        self.successes = 0
        self.trials = 0
        if state == "closed":
            self.failures = 0
        if state == "open":
            self.opened_at = now

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened_at >= self.config.reset_timeout:
            self.go("half_open", now)


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.config = BreakerConfig(
            failure_threshold=3, reset_timeout=10, half_open_max_calls=2, success_threshold=2
        )
        self.breaker = CircuitBreaker("sut", self.config, clock=self.clock)
        self.model = Model(self.config)
        self.held: list[int] = []

    @rule()
    def allow(self) -> None:
        self.model.tick(self.clock.t)
        m = self.model
        expect = m.state == "closed" or (m.state == "half_open" and m.trials < 2)
        try:
            permit = self.breaker.allow()
        except CircuitOpen:
            assert not expect
            return
        assert expect
        if m.state == "half_open":
            m.trials += 1
        assert permit == m.generation
        self.held.append(permit)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 100), ok=st.booleans())
    def settle(self, index: int, ok: bool) -> None:
        permit = self.held.pop(index % len(self.held))
        m = self.model
        m.tick(self.clock.t)
        if ok:
            self.breaker.record_success(permit)
        else:
            self.breaker.record_failure(PlatformUnavailable("x"), permit)
        if permit != m.generation:
            return
        if m.state == "half_open":
            m.trials = max(m.trials - 1, 0)
            if ok:
                m.successes += 1
                if m.successes >= self.config.success_threshold:
                    m.go("closed", self.clock.t)
            else:
                m.go("open", self.clock.t)
        elif m.state == "closed":
            if ok:
                m.failures = 0
            else:
                m.failures += 1
                if m.failures >= self.config.failure_threshold:
                    m.go("open", self.clock.t)

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.99, 10.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_state(self) -> None:
        self.model.tick(self.clock.t)
        assert self.breaker.state.value == self.model.state
        assert self.breaker.health().consecutive_failures == self.model.failures


TestBreakerStateful = BreakerMachine.TestCase
TestBreakerStateful.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
