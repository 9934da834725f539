"""Rate limiting: adaptive (fed by the platform's own headers) and a static token bucket.

Platforms tell us their budget on every response (GitHub ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset``, Linear's request and complexity headers) and tell us to back off when
we overspend (``Retry-After`` on 403/429). :class:`AdaptiveRateLimiter` keeps one budget per
*bucket* (a GitHub resource such as ``core``, a Slack method tier, Linear's ``requests`` and
``complexity``) for one credential, spends it optimistically as calls go out, and makes callers
*wait* (through the :class:`~contexten.clock.Clock`) while a bucket is empty or blocked. A
caller only fails, with :class:`~contexten.exceptions.RateLimited`, when the wait would pass
its deadline or the limiter's ``max_wait``: then the step can be rescheduled durably instead
of holding a task for an hour.

:class:`TokenBucket` paces calls to a fixed rate for limits that a platform documents but does
not announce in headers (Codegen's 10 agent runs per minute, Slack's tier 3 ~50/minute).
"""

from __future__ import annotations

from dataclasses import dataclass

from contexten.clock import Clock, WallClock
from contexten.exceptions import RateLimited

__all__ = ["ALL_BUCKETS", "AdaptiveRateLimiter", "BucketState", "RateLimitUpdate", "TokenBucket"]

ALL_BUCKETS = "*"
"""Bucket name of an update that applies to every bucket (e.g. GitHub's secondary limit)."""


@dataclass(frozen=True, slots=True)
class RateLimitUpdate:
    """What one response said about the budget.

    Attributes:
        bucket: which budget (``ALL_BUCKETS`` for a block that applies to all of them).
        remaining: calls (or points) left in the current window, if announced.
        limit: the window's size, if announced (for metrics).
        reset_after: seconds from now until the window refills, if announced.
        retry_after: seconds to send nothing more on this bucket (a 429/403 told us so).
    """

    bucket: str = "default"
    remaining: int | None = None
    limit: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class BucketState:
    """One bucket's known budget; times are on the limiter's clock's monotonic scale."""

    remaining: int | None = None
    limit: int | None = None
    reset_at: float | None = None
    blocked_until: float = 0.0
    waits: int = 0


class AdaptiveRateLimiter:
    """Per-credential budgets learned from responses; callers wait instead of failing.

    Args:
        name: shown in errors (e.g. ``"github"``).
        clock: where time is read and waited on.
        reserve: calls to keep back in each bucket (a margin for other processes sharing
            the credential); a bucket at or below it waits for its reset.
        max_wait: the longest any caller waits before getting
            :class:`~contexten.exceptions.RateLimited` (a deadline may cut it shorter).
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock | None = None,
        reserve: int = 0,
        max_wait: float = 60.0,
    ) -> None:
        self.name = name
        self._clock = clock or WallClock()
        self.reserve = reserve
        self.max_wait = max_wait
        self._buckets: dict[str, BucketState] = {}
        self._global_block = 0.0

    def snapshot(self) -> dict[str, BucketState]:
        """A copy of every bucket's state (for metrics and tests)."""
        return {
            name: BucketState(b.remaining, b.limit, b.reset_at, b.blocked_until, b.waits)
            for name, b in self._buckets.items()
        }

    def delay(self, bucket: str = "default") -> float:
        """Seconds a call on ``bucket`` would have to wait now (0: it may go)."""
        now = self._clock.monotonic()
        state = self._buckets.get(bucket)
        wait = max(self._global_block - now, 0.0)
        if state is None:
            return wait
        wait = max(wait, state.blocked_until - now)
        if state.remaining is not None and state.remaining <= self.reserve:
            if state.reset_at is not None and state.reset_at > now:
                wait = max(wait, state.reset_at - now)
            else:
                state.remaining = None  # the window passed: the next response tells us more
        return wait

    async def acquire(self, bucket: str = "default", *, deadline: float | None = None) -> None:
        """Wait until ``bucket`` has budget, then spend one unit of it.

        Args:
            bucket: which budget.
            deadline: a monotonic time (the clock's scale) the caller must not wait past.

        Raises:
            RateLimited: the wait would pass ``deadline`` or ``max_wait``.
        """
        waited = 0.0
        while True:
            wait = self.delay(bucket)
            if wait <= 0:
                state = self._buckets.get(bucket)
                if state is not None and state.remaining is not None:
                    state.remaining -= 1
                return
            now = self._clock.monotonic()
            if waited + wait > self.max_wait or (deadline is not None and now + wait > deadline):
                raise RateLimited(
                    f"rate limited on {bucket!r} for {wait:.1f}s more",
                    retry_after=wait,
                    platform=self.name,
                )
            self._buckets.setdefault(bucket, BucketState()).waits += 1
            await self._clock.sleep(wait)
            waited += wait

    def update(self, update: RateLimitUpdate) -> None:
        """Learn from a response's headers."""
        now = self._clock.monotonic()
        if update.bucket == ALL_BUCKETS:
            if update.retry_after is not None:
                self._global_block = max(self._global_block, now + update.retry_after)
            return
        state = self._buckets.setdefault(update.bucket, BucketState())
        if update.limit is not None:
            state.limit = update.limit
        if update.remaining is not None:
            new_reset = now + update.reset_after if update.reset_after is not None else None
            same_window = (
                state.reset_at is not None
                and new_reset is not None
                and abs(state.reset_at - new_reset) < 1.5
            )
            if same_window and state.remaining is not None:
                # Responses to concurrent calls arrive out of order: within one window the
                # smallest count is the freshest.
                state.remaining = min(state.remaining, update.remaining)
            else:
                state.remaining = update.remaining
            if new_reset is not None:
                state.reset_at = new_reset
        if update.retry_after is not None:
            state.blocked_until = max(state.blocked_until, now + update.retry_after)


class TokenBucket:
    """Paces calls to ``rate`` per second with bursts of up to ``burst``.

    Args:
        rate: tokens added per second.
        burst: the bucket's capacity (and its initial content).
        clock: where time is read and waited on.
        name: shown in errors.
    """

    def __init__(
        self, rate: float, burst: int = 1, *, clock: Clock | None = None, name: str = "bucket"
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = rate
        self.burst = burst
        self.name = name
        self._clock = clock or WallClock()
        self._tokens = float(burst)
        self._updated = self._clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, *, deadline: float | None = None) -> None:
        """Take one token, waiting for it if needed.

        Raises:
            RateLimited: the token would come after ``deadline``.
        """
        self._refill()
        # Reserve the token now (the count may go negative) so concurrent callers queue in
        # order instead of all waking at the same instant.
        self._tokens -= 1
        if self._tokens >= 0:
            return
        wait = -self._tokens / self.rate
        if deadline is not None and self._clock.monotonic() + wait > deadline:
            self._tokens += 1
            raise RateLimited(
                f"{self.name}: next slot in {wait:.1f}s", retry_after=wait, platform=self.name
            )
        try:
            await self._clock.sleep(wait)
        except BaseException:
            self._tokens += 1  # cancelled while waiting: give the reservation back
            raise
