"""Handler durations, kept as a fixed-bucket histogram per subscription.

Counting into a few buckets costs a comparison loop per attempt and no allocation, so the
dispatcher can time every handler attempt; ``/metrics`` exports the counts as a Prometheus
histogram (``contexten_handler_duration_seconds``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DURATION_BUCKETS", "DurationHistogram", "DurationSnapshot"]

DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the buckets; one more, unbounded, catches the rest."""


@dataclass(frozen=True, slots=True)
class DurationSnapshot:
    """A histogram's state at one moment.

    Attributes:
        bounds: the buckets' upper bounds (seconds), ascending.
        counts: observations per bucket (not cumulative), one more than ``bounds`` (+Inf).
        total: the sum of every observation, in seconds.
    """

    bounds: tuple[float, ...] = DURATION_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    total: float = 0.0

    @property
    def count(self) -> int:
        """How many durations were observed."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, observations <= bound)`` pairs, Prometheus style, ending in +Inf."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass(slots=True)
class DurationHistogram:
    """Counts durations into :data:`DURATION_BUCKETS`."""

    _counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    _total: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self._counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self._total += seconds

    def snapshot(self) -> DurationSnapshot:
        """The counts so far."""
        return DurationSnapshot(DURATION_BUCKETS, tuple(self._counts), self._total)
