"""Bulkhead: bounded concurrency with a bounded queue, so one slow dependency cannot take
every task with it.

At most ``max_concurrent`` callers are inside at once; up to ``max_queue`` more wait their
turn (first come, first served); anyone beyond that is refused at once with
:class:`~contexten.exceptions.BulkheadFull`, which is the load-shedding signal.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from contexten.exceptions import BulkheadFull

__all__ = ["Bulkhead", "BulkheadStats"]


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    """A snapshot for metrics: callers inside, callers waiting, callers refused so far."""

    name: str
    active: int
    queued: int
    rejected: int
    max_concurrent: int
    max_queue: int


class Bulkhead:
    """Admit at most ``max_concurrent`` callers; queue at most ``max_queue`` more.

    Use as ``async with bulkhead: ...``.

    Args:
        name: shown in errors and stats.
        max_concurrent: callers inside at once (>= 1).
        max_queue: callers allowed to wait (>= 0; 0 refuses as soon as it is full).
    """

    def __init__(self, name: str, max_concurrent: int, max_queue: int = 0) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._rejected = 0

    def stats(self) -> BulkheadStats:
        """Current occupancy."""
        return BulkheadStats(
            name=self.name,
            active=self._active,
            queued=len(self._waiters),
            rejected=self._rejected,
            max_concurrent=self.max_concurrent,
            max_queue=self.max_queue,
        )

    async def acquire(self) -> None:
        """Enter, waiting in the queue if needed; raise :class:`BulkheadFull` if it is full."""
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            return
        if len(self._waiters) >= self.max_queue:
            self._rejected += 1
            raise BulkheadFull(
                f"bulkhead {self.name!r} is full "
                f"({self.max_concurrent} running, {self.max_queue} queued)"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # We were handed the slot just as we were cancelled: pass it on.
                self.release()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Leave, handing the slot to the longest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
