"""Slowing down credential guessing: too many failures from one client answer 429.

Each client address may fail authentication ``limit`` times in a sliding window of
``window`` seconds; after that every request of that client that needs a credential is
answered 429 with ``Retry-After`` until its oldest failure leaves the window. Memory is
bounded: at most ``max_clients`` addresses are tracked (the least recently failing are
forgotten first).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Final

from contexten.clock import Clock, WallClock

__all__ = ["FailureThrottle"]

_MAX_CLIENTS: Final = 10_000


class FailureThrottle:
    """Counts authentication failures per client in a sliding window.

    Args:
        limit: failures allowed per client within ``window`` (0: no throttling).
        window: the window, in seconds.
        clock: where durations are measured.
        max_clients: how many client addresses are tracked at most.
    """

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        clock: Clock | None = None,
        max_clients: int = _MAX_CLIENTS,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock or WallClock()
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds ``client`` must wait before its next attempt, or None if it may try now."""
        if self.limit <= 0:
            return None
        now = self._clock.monotonic()
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, client: str) -> bool:
        """Count one failure of ``client``; True when this one reaches the limit."""
        if self.limit <= 0:
            return False
        now = self._clock.monotonic()
        times = self._recent(client, now)
        if times is None:
            times = self._failures[client] = deque()
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
        times.append(now)
        return len(times) == self.limit
