"""Supervision: keep background loops alive, restarting the ones that crash.

A long-running process must never stop doing its job silently because one loop hit an
unexpected error (a dropped connection, a bug on a rare path). :class:`Supervisor` runs named
coroutines as tasks; when one raises, the crash is logged with its traceback, counted, and the
coroutine is started again after an exponential backoff (capped), so a persistent fault does
not spin. A coroutine that returns normally is finished and not restarted; cancellation is
never treated as a crash.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from contexten.clock import Clock, WallClock
from contexten.observability.logging import get_logger
from contexten.resilience.retry import RetryPolicy

__all__ = ["Supervisor", "TaskState", "TaskStatus"]

DEFAULT_BACKOFF = RetryPolicy(
    initial_interval=0.1, backoff_coefficient=2.0, maximum_interval=30.0, maximum_attempts=0
)
"""Restart backoff: 0.1 s, doubling, at most 30 s apart, forever."""


class TaskState(enum.Enum):
    """Where a supervised task is in its life."""

    RUNNING = "running"
    BACKING_OFF = "backing_off"
    """It crashed and waits before its restart."""
    FINISHED = "finished"
    """Its coroutine returned; it is not restarted."""
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """A supervised task's state, restart count and last crash (``"Type: message"``)."""

    name: str
    state: TaskState
    restarts: int
    last_error: str | None


class _Supervised:
    __slots__ = ("backoff", "factory", "last_error", "name", "restarts", "state", "task")

    def __init__(
        self, name: str, factory: Callable[[], Awaitable[None]], backoff: RetryPolicy
    ) -> None:
        self.name = name
        self.factory = factory
        self.backoff = backoff
        self.restarts = 0
        self.last_error: str | None = None
        self.state = TaskState.RUNNING
        self.task: asyncio.Task[None] | None = None


class Supervisor:
    """Runs named background coroutines and restarts them when they crash.

    Args:
        clock: what backoff waits are measured with (a virtual clock in tests).
        backoff: the restart delays; ``maximum_attempts`` is ignored (restarts never stop).
        healthy_after: seconds a run must last for its next crash to start the backoff
            from the beginning again.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        backoff: RetryPolicy = DEFAULT_BACKOFF,
        healthy_after: float = 60.0,
    ) -> None:
        self._clock = clock or WallClock()
        self._backoff = backoff
        self._healthy_after = healthy_after
        self._tasks: dict[str, _Supervised] = {}
        self._log = get_logger("contexten.supervisor")

    def start(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        backoff: RetryPolicy | None = None,
    ) -> None:
        """Run ``factory()`` as task ``name`` now, and again after each crash.

        ``factory`` is called for each run, so it must build a fresh awaitable every time
        (pass the coroutine function, not a coroutine object). ``backoff``: this task's
        restart delays (default: the supervisor's), e.g. shorter ones for a task that must
        come back within a lease.

        Raises:
            ValueError: a task named ``name`` is already running.
        """
        current = self._tasks.get(name)
        if current is not None and current.task is not None and not current.task.done():
            raise ValueError(f"a supervised task named {name!r} is already running")
        entry = _Supervised(name, factory, backoff or self._backoff)
        self._tasks[name] = entry
        entry.task = asyncio.get_running_loop().create_task(self._run(entry), name=name)

    async def _run(self, entry: _Supervised) -> None:
        failures = 0
        while True:
            entry.state = TaskState.RUNNING
            started_at = self._clock.monotonic()
            try:
                await entry.factory()
            except asyncio.CancelledError:
                entry.state = TaskState.STOPPED
                raise
            except Exception as e:
                if self._clock.monotonic() - started_at >= self._healthy_after:
                    failures = 0
                failures += 1
                entry.restarts += 1
                entry.last_error = f"{type(e).__name__}: {e}"
                delay = entry.backoff.delay(failures)
                self._log.error(
                    "supervised task crashed; restarting",
                    task=entry.name,
                    restarts=entry.restarts,
                    retry_in=round(delay, 3),
                    exc_info=e,
                )
                entry.state = TaskState.BACKING_OFF
                await self._clock.sleep(delay)
            else:
                entry.state = TaskState.FINISHED
                return

    async def stop(self, name: str | None = None) -> None:
        """Cancel task ``name`` (default: every task) and wait until it has ended."""
        entries = list(self._tasks.values()) if name is None else [self._tasks[name]]
        tasks = [e.task for e in entries if e.task is not None and not e.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for e in entries:
            if e.state is not TaskState.FINISHED:
                e.state = TaskState.STOPPED

    @property
    def restarts(self) -> Mapping[str, int]:
        """How many times each task was restarted after a crash."""
        return {name: e.restarts for name, e in self._tasks.items()}

    def status(self, name: str) -> TaskStatus:
        """The state of task ``name`` (KeyError if it was never started)."""
        e = self._tasks[name]
        return TaskStatus(e.name, e.state, e.restarts, e.last_error)

    def statuses(self) -> list[TaskStatus]:
        """The state of every task this supervisor started, in start order."""
        return [self.status(name) for name in self._tasks]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks
