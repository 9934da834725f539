"""An app's projections: registry, runners under the supervisor, status, rebuild and reads."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from contexten.bus.partitions import LeaseSettings
from contexten.exceptions import ConfigurationError, ProjectionNotFound
from contexten.projections.base import Projection, Query, ReadModels, Table
from contexten.projections.fanout import ProjectionFanout
from contexten.projections.ownership import ProjectionOwnership, projection_group
from contexten.projections.runner import Progress, ProjectionRunner, ProjectionStatus
from contexten.settings import seconds_from_env
from contexten.store.base import EventStore

__all__ = ["DEFAULT_LINGER", "LINGER_ENV", "Projections", "TaskStarter", "linger_from_env"]

_FANOUT_TASK = "projections:fold"
_OWNER_TASK = "projections:leases"

LINGER_ENV = "CONTEXTEN_READ_MODEL_LINGER_SECONDS"
DEFAULT_LINGER = 0.02
"""Seconds a running app's read models keep between two commits under a stream of events
(see :attr:`~contexten.projections.runner.ProjectionRunner.linger`). Committing every batch
of one or two events made hundreds of small read-model transactions a second at a steady
trickle; their page writes made the event store's own fsyncs wait, and publish -> handler
took 2.5 ms at the median instead of 0.9 (B1, 1,000 events/s). A page or an API call sees a
new row at most this much later; the first event after a quiet spell, at once."""


def linger_from_env(default: float = DEFAULT_LINGER) -> float:
    """``CONTEXTEN_READ_MODEL_LINGER_SECONDS`` if set (``0``: commit every batch at once),
    else ``default``.

    Raises:
        ConfigurationError: the variable is not a number of seconds from 0 to 1.
    """
    return seconds_from_env(LINGER_ENV, default, most=1.0)


class TaskStarter(Protocol):
    """What runs the runners: the app's supervisor (restarts a crashed runner)."""

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` as task ``name``, again after each crash."""

    async def stop(self, name: str | None = None) -> None:
        """Cancel task ``name`` and wait until it has ended."""


class Projections:
    """The projections of one store: register, run, inspect, rebuild and read them.

    Args:
        store: the event store (opened by its owner).
        models: the read-model backend beside it (opened by :meth:`open`).
        batch_size: events per transaction.
        linger: seconds the running projections keep between two commits, waiting to fill
            a short batch (0: never wait; the app passes :func:`linger_from_env`).
    """

    def __init__(
        self,
        store: EventStore,
        models: ReadModels,
        *,
        batch_size: int = 500,
        linger: float = 0.0,
    ) -> None:
        self.store = store
        self.models = models
        self.batch_size = batch_size
        self.linger = linger
        self._runners: dict[str, ProjectionRunner] = {}
        self._tables: dict[str, Table] = {}
        self._open = False
        self._tasks: TaskStarter | None = None
        self.fanout: ProjectionFanout | None = None
        """The reader folding this process's projections (while started)."""
        self.ownership: ProjectionOwnership | None = None
        """Which projections this process holds (while started with a worker id)."""

    def add(self, projection: Projection) -> Projection:
        """Register ``projection`` (before the app starts, or it runs from the next start).

        Raises:
            ConfigurationError: its name or one of its table names is taken.
        """
        if projection.name in self._runners:
            raise ConfigurationError(f"a projection named {projection.name!r} is registered")
        for table in projection.tables:
            if table.name in self._tables:
                raise ConfigurationError(f"a read-model table {table.name!r} is registered")
        for table in projection.tables:
            self._tables[table.name] = table
        runner = ProjectionRunner(self.store, self.models, projection, batch_size=self.batch_size)
        runner.linger = self.linger
        self._runners[projection.name] = runner
        return projection

    @property
    def names(self) -> builtins.list[str]:
        """The registered projections' names, in registration order."""
        return list(self._runners)

    def runner(self, name: str) -> ProjectionRunner:
        """The runner of projection ``name``.

        Raises:
            ProjectionNotFound: no such projection.
        """
        try:
            return self._runners[name]
        except KeyError:
            known = ", ".join(self._runners) or "none"
            raise ProjectionNotFound(f"no projection {name!r} (known: {known})") from None

    def table(self, name: str) -> Table:
        """The registered table ``name``.

        Raises:
            ProjectionNotFound: no projection declares it.
        """
        try:
            return self._tables[name]
        except KeyError:
            raise ProjectionNotFound(f"no read-model table {name!r}") from None

    async def open(self) -> None:
        """Open the backend and create every projection's tables. Idempotent."""
        if self._open:
            return
        await self.models.open()
        for runner in self._runners.values():
            await self.models.ensure(runner.projection)
        self._open = True

    async def close(self) -> None:
        """Close the backend."""
        if self._open:
            self._open = False
            await self.models.close()

    def start(
        self,
        tasks: TaskStarter,
        *,
        worker_id: str | None = None,
        leases: LeaseSettings | None = None,
    ) -> None:
        """Fold the projections in supervised tasks, reading the log once per batch for all
        of them (:class:`~contexten.projections.fanout.ProjectionFanout`).

        With a ``worker_id`` (the dispatcher's), this process runs only the projections
        whose lease it holds, its fair share among the live workers (see
        :mod:`contexten.projections.ownership`; the worker must register
        :attr:`lease_groups` with its heartbeat); without one, it runs them all.
        """
        if self._tasks is not None:
            return
        self._tasks = tasks
        self.fanout = ProjectionFanout(self.store, batch_size=self.batch_size)
        tasks.start(_FANOUT_TASK, self.fanout.run)
        if worker_id is None:
            fanout = self.fanout

            async def join_all() -> None:
                for runner in self._runners.values():
                    await fanout.join(runner)

            tasks.start(_OWNER_TASK, join_all)
        else:
            self.ownership = ProjectionOwnership(
                self.store,
                self._runners,
                self.fanout,
                worker_id=worker_id,
                leases=leases or LeaseSettings.from_env(),
            )
            tasks.start(_OWNER_TASK, self.ownership.run)

    @property
    def lease_groups(self) -> builtins.list[str]:
        """The lease groups of the projections (``projection:{name}``)."""
        return [projection_group(name) for name in self._runners]

    async def stop(self) -> None:
        """Stop folding: save what the projections folded and, if they are held by lease,
        release them so that the other workers take them over at once."""
        tasks, self._tasks = self._tasks, None
        if tasks is None:
            return
        await tasks.stop(_OWNER_TASK)
        await tasks.stop(_FANOUT_TASK)
        if self.ownership is not None:
            await self.ownership.release()
        elif self.fanout is not None:
            await self.fanout.leave_all()

    async def catch_up(self, name: str | None = None, *, progress: Progress | None = None) -> None:
        """Fold ``name`` (default: every projection) up to the log's current head.

        Read paths that must see everything stored so far (the CLI, tests) call this first;
        it is cheap when the projection is already current.
        """
        for runner in [self.runner(name)] if name else self._runners.values():
            await runner.catch_up(progress=progress)

    async def status(self) -> builtins.list[ProjectionStatus]:
        """Every projection's position, lag and state."""
        return [await r.status() for r in self._runners.values()]

    async def rebuild(self, name: str, *, progress: Progress | None = None) -> int:
        """Rebuild projection ``name`` from the whole log into shadow tables and swap them in.

        Raises:
            ProjectionNotFound: no such projection.
        """
        return await self.runner(name).rebuild(progress=progress)

    async def query(self, table: str, query: Query | None = None) -> builtins.list[dict[str, Any]]:
        """Rows of read-model ``table`` (see :class:`~contexten.projections.base.Query`)."""
        return await self.models.query(self.table(table), query or Query())

    async def get(self, table: str, *key: Any) -> dict[str, Any] | None:
        """One row of read-model ``table`` by key, or None."""
        return await self.models.get(self.table(table), tuple(key))

    async def count(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        """How many rows of ``table`` match ``where``."""
        return await self.models.count(self.table(table), where)
