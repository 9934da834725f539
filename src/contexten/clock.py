"""The clock port: where Contexten reads time and waits.

Core code never calls ``time.time()`` or ``asyncio.sleep()`` for anything a test may want to
skip (retry backoff, durable timers); it asks a :class:`Clock`. Production uses
:class:`WallClock`; tests use :class:`contexten.testing.VirtualClock`, which skips time.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime

__all__ = ["Clock", "WallClock"]


class Clock(ABC):
    """Reads time and sleeps; the one place the rest of Contexten gets time from."""

    @abstractmethod
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards (for durations)."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (0 or less: just yield to the event loop)."""

    async def sleep_until(self, when: datetime) -> None:
        """Wait until ``when`` (at once if it has passed)."""
        await self.sleep((when - self.now()).total_seconds())


class WallClock(Clock):
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))
