"""A virtual clock that skips time, so a test of a 24-hour workflow takes milliseconds.

:class:`VirtualClock` implements the :class:`~contexten.clock.Clock` port. Sleeping on it
registers a timer; time only moves when the test says so:

* :meth:`VirtualClock.advance` moves time forward and fires the timers that fall due, one at a
  time in due order, letting the woken tasks run before the next one fires;
* with ``auto_advance=True`` the clock jumps by itself to the next timer whenever the event
  loop has nothing ready to run, which is what "every task is blocked on the clock" looks
  like from inside asyncio.

Caveat of auto-advance: a task waiting on a thread or a socket (a SQLite commit in flight,
an HTTP call) is not "ready" either, so time may jump while such work is pending. Time still
moves monotonically and timers still fire in due order; but a test that races a timeout
against real I/O should advance manually, or give ``autojump_threshold`` a small real delay
that must pass quietly before each jump.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from contexten.clock import Clock

__all__ = ["VirtualClock"]

_DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


class VirtualClock(Clock):
    """A clock whose time moves only when told (or, with ``auto_advance``, when idle).

    Args:
        start: the initial time (default 2030-01-01 UTC); must be timezone-aware.
        auto_advance: jump to the next timer whenever the event loop is idle.
        autojump_threshold: real seconds the loop must stay idle before an automatic jump.
    """

    def __init__(
        self,
        start: datetime | None = None,
        *,
        auto_advance: bool = False,
        autojump_threshold: float = 0.0,
    ) -> None:
        start = start or _DEFAULT_START
        if start.tzinfo is None:
            raise ValueError("VirtualClock start must be timezone-aware")
        self._start = start.astimezone(UTC)
        self._elapsed = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._auto = auto_advance
        self._threshold = autojump_threshold
        self._auto_task: asyncio.Task[None] | None = None
        self._timer_added: asyncio.Event | None = None
        self.fired = 0
        """How many timers have fired (handy in assertions)."""

    # -- the Clock port ----------------------------------------------------------------------

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._timers, (self._elapsed + seconds, next(self._counter), fut))
        if self._auto:
            self._ensure_auto()
            assert self._timer_added is not None
            self._timer_added.set()
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()

    # -- driving time --------------------------------------------------------------------------

    @property
    def pending_timers(self) -> int:
        """How many timers are waiting to fire."""
        return sum(1 for _, _, fut in self._timers if not fut.done())

    @property
    def next_due(self) -> float | None:
        """Seconds from now until the next timer fires (None: no timer)."""
        self._drop_dead()
        return max(self._timers[0][0] - self._elapsed, 0.0) if self._timers else None

    async def advance(self, seconds: float | timedelta) -> None:
        """Move time forward by ``seconds``, firing due timers one by one, in due order.

        After each timer fires, the tasks it woke run until the loop settles, so a timer they
        register that falls due within the same advance fires too, in order.
        """
        delta = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if delta < 0:
            raise ValueError("time cannot go backwards")
        target = self._elapsed + delta
        await self.settle()
        while True:
            self._drop_dead()
            if not self._timers or self._timers[0][0] > target:
                break
            self._fire_next()
            await self.settle()
        self._elapsed = max(self._elapsed, target)
        await self.settle()

    async def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when`` (see :meth:`advance`)."""
        await self.advance(max((when - self.now()).total_seconds(), 0.0))

    async def run_timers(self, limit: int = 1_000_000) -> int:
        """Fire timers in due order until none is left (or ``limit``); return how many."""
        count = 0
        await self.settle()
        while count < limit:
            self._drop_dead()
            if not self._timers:
                break
            self._fire_next()
            count += 1
            await self.settle()
        return count

    @staticmethod
    async def settle(rounds: int = 3) -> None:
        """Let every runnable task run until the loop has nothing ready (bounded)."""
        loop = asyncio.get_running_loop()
        for _ in range(10_000):
            for _ in range(rounds):
                await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            if ready is None or not ready:
                return

    def _drop_dead(self) -> None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)

    def _fire_next(self) -> None:
        due, _, fut = heapq.heappop(self._timers)
        self._elapsed = max(self._elapsed, due)
        fut.set_result(None)
        self.fired += 1

    # -- auto-advance ----------------------------------------------------------------------------

    def _ensure_auto(self) -> None:
        if self._auto_task is None or self._auto_task.done():
            self._timer_added = asyncio.Event()
            self._auto_task = asyncio.get_running_loop().create_task(
                self._autojump(), name="virtual-clock-autojump"
            )

    async def _autojump(self) -> None:
        assert self._timer_added is not None
        while True:
            await self.settle()
            self._drop_dead()
            if not self._timers:
                self._timer_added.clear()
                await self._timer_added.wait()
                continue
            if self._threshold > 0:
                before = len(self._timers)
                await asyncio.sleep(self._threshold)
                await self.settle()
                self._drop_dead()
                if len(self._timers) != before or not self._timers:
                    continue
            self._fire_next()

    async def aclose(self) -> None:
        """Stop auto-advancing (cancels the background task). Idempotent."""
        task, self._auto_task = self._auto_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> Self:
        if self._auto:
            self._ensure_auto()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
