"""Retry policy as data, in the manner of Temporal's ``RetryPolicy``.

A policy says how long to wait before each retry and when to stop; the dispatcher, workflow
steps and platform clients all read the same dataclass, so retry behaviour is configured, not
coded. Intervals accept seconds or :class:`~datetime.timedelta`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["RetryPolicy", "is_retryable"]


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How to retry a failing handler or step.

    Attributes:
        initial_interval: wait before the first retry (seconds or timedelta).
        backoff_coefficient: each further wait is the previous one times this.
        maximum_interval: no wait is longer than this (default: 100 x initial_interval).
        maximum_attempts: total attempts including the first; 0 means unlimited.
        jitter: fraction of each wait that is randomised (0.2: +/-20%), so that many
            failing consumers do not retry in lock-step.
        non_retryable_error_types: exception class names (or classes) that fail at once.
    """

    initial_interval: float | timedelta = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | timedelta | None = None
    maximum_attempts: int = 5
    jitter: float = 0.2
    non_retryable_error_types: Sequence[str | type[BaseException]] = field(default=())

    def __post_init__(self) -> None:
        if _seconds(self.initial_interval) < 0:
            raise ValueError("initial_interval must be >= 0")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be >= 1")
        if self.maximum_attempts < 0:
            raise ValueError("maximum_attempts must be >= 0 (0: unlimited)")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.maximum_interval is not None and _seconds(self.maximum_interval) < _seconds(
            self.initial_interval
        ):
            raise ValueError("maximum_interval must be >= initial_interval")

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        """A policy that tries once."""
        return cls(maximum_attempts=1)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), with jitter."""
        base = _seconds(self.initial_interval) * self.backoff_coefficient ** max(attempt - 1, 0)
        cap = (
            _seconds(self.maximum_interval)
            if self.maximum_interval is not None
            else 100 * _seconds(self.initial_interval)
        )
        base = min(base, cap)
        if self.jitter:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(base, 0.0)

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether to try again after attempt number ``attempt`` failed with ``error``."""
        if not is_retryable(error, self.non_retryable_error_types):
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts


def is_retryable(
    error: BaseException, non_retryable: Sequence[str | type[BaseException]] = ()
) -> bool:
    """Whether ``error`` may be retried.

    An error is final when it has a truthy ``non_retryable`` attribute (for example
    :class:`~contexten.exceptions.NonRetryableError`), or its class, or any base class, is
    named (or given) in ``non_retryable``.
    """
    if getattr(error, "non_retryable", False):
        return False
    for cls in type(error).__mro__:
        for item in non_retryable:
            if (
                item is cls
                or item == cls.__name__
                or item == f"{cls.__module__}.{cls.__qualname__}"
            ):
                return False
    return True
