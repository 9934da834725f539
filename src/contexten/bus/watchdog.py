"""Handler timeouts with one timer per subscription instead of one per attempt.

``asyncio.timeout()`` arms and cancels a loop timer for every use, which costs more than a
trivial handler does. All attempts of one subscription share one timeout, so their deadlines
arrive in the order the attempts started; a :class:`Watchdog` keeps one deadline per worker
(at most ``concurrency``) and a single timer for the earliest one. Starting and ending an
attempt is two attribute writes; when the timer fires, it cancels the workers whose attempt
is past its deadline, marking them so the attempt reports a timeout, and re-arms for the next.

The cancellation always lands inside the handler: the worker clears its deadline in the same
event-loop step in which the handler returns, so the timer can only see attempts that are
suspended in the handler.
"""

from __future__ import annotations

import asyncio

__all__ = ["Watchdog", "WorkerSlot"]


class WorkerSlot:
    """One worker's current attempt, as the watchdog sees it."""

    __slots__ = ("deadline", "task", "timed_out")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.deadline: float | None = None
        self.timed_out = False


class Watchdog:
    """Cancels attempts that run longer than ``timeout`` seconds.

    Args:
        timeout: the per-attempt limit, in seconds (loop time).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._slots: set[WorkerSlot] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, task: asyncio.Task[None]) -> WorkerSlot:
        """Watch worker ``task``; returns its slot."""
        slot = WorkerSlot(task)
        self._slots.add(slot)
        return slot

    def remove(self, slot: WorkerSlot) -> None:
        """Stop watching a worker (it ended)."""
        self._slots.discard(slot)

    def begin(self, slot: WorkerSlot) -> None:
        """An attempt starts on ``slot``'s worker now."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        slot.deadline = deadline
        if self._timer is None:
            # Deadlines only grow, so an armed timer is already due no later than this one.
            self._timer = loop.call_at(deadline, self._fire)

    @staticmethod
    def end(slot: WorkerSlot) -> bool:
        """The attempt on ``slot`` ended; True if the watchdog had cancelled it."""
        slot.deadline = None
        timed_out = slot.timed_out
        slot.timed_out = False
        return timed_out

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        earliest: float | None = None
        for slot in self._slots:
            deadline = slot.deadline
            if deadline is None:
                continue
            if deadline <= now:
                slot.deadline = None
                slot.timed_out = True
                slot.task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = self._loop.call_at(earliest, self._fire)

    def close(self) -> None:
        """Disarm the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
