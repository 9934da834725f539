"""Folding the log into one projection: batches, the checkpoint compare-and-swap, rebuilds.

A :class:`ProjectionRunner` reads the global log from its projection's checkpoint, lets the
projection fold each batch into a :class:`~contexten.projections.base.ProjectionBatch`, and
commits the batch's rows with the new checkpoint in one transaction. If the checkpoint moved
meanwhile (another process runs the same projection, or a rebuild swapped new tables in),
the commit raises :class:`~contexten.exceptions.ProjectionConflict`, nothing is written, and
the runner starts again from the checkpoint it finds.

A rebuild folds the whole log into *shadow* tables while the live ones keep serving, then
swaps them in; the live runner's next commit meets the moved checkpoint and carries on from
the shadow's position.

While it runs (:meth:`ProjectionRunner.run`), the runner batches its commits, because each
is a write transaction (on SQLite, in the read models' own file, a thread hop and a WAL
append) and one per small batch cost the hot paths (B1, B2) a third to a half of their
throughput:

* if :attr:`~ProjectionRunner.linger` is set (0 for a bare runner; an app's projections
  use :data:`~contexten.projections.manager.DEFAULT_LINGER`, 20 ms, see there), it commits
  at most about once per ``linger``: having read fewer than a full batch within ``linger``
  of its last commit, it waits out the rest of it for more events and folds them all in one
  transaction. A batch after a quiet spell is folded and committed at once, so rows a page
  or an API call expects appear as soon as before unless events stream in;
* a batch that changes no rows (most, for a projection interested in few event types) is
  not committed on its own: the position stays in memory and is saved with the next batch
  that writes rows, or once :attr:`~ProjectionRunner.checkpoint_interval` seconds passed
  (also when caught up). That is safe: folding those events again after a crash writes
  nothing again (``apply`` depends only on the event and the rows, which did not change).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from contexten.exceptions import ProjectionConflict
from contexten.observability.logging import get_logger
from contexten.projections.base import Projection, ProjectionBatch, ReadModels
from contexten.store.base import EventStore, RecordedEvent

__all__ = ["Progress", "ProjectionRunner", "ProjectionStatus", "linger_left", "read_batch"]

Progress = Callable[[int, int], None]
"""``progress(position, head)``: called after each committed batch of a catch-up or rebuild."""


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands.

    Attributes:
        name: the projection.
        position: the last log position folded into its tables.
        head: the log's head when asked.
        lag: events not yet folded (``head - position``).
        version: the projection version its tables were written by (0: never written).
        stale: the tables were written by another version: rebuild them.
        state: ``running`` (by this process), ``idle`` (not run by this process: another
            process owns it, or this one does not dispatch), ``failing`` or ``rebuilding``.
        last_error: the last failure's type and message (``None`` when healthy).
        updated_at: when the checkpoint last moved.
    """

    name: str
    position: int
    head: int
    lag: int
    version: int
    stale: bool
    state: str
    last_error: str | None
    updated_at: datetime | None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "version": self.version,
            "stale": self.stale,
            "state": self.state,
            "last_error": self.last_error,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def linger_left(linger: float, committed_at: float) -> float:
    """What is left of ``linger`` since the last commit of rows, made at ``committed_at``
    (monotonic seconds; ``-inf``: none yet, so nothing is left)."""
    return max(0.0, linger - (time.monotonic() - committed_at))


async def read_batch(
    store: EventStore, after: int, size: int, linger: float
) -> tuple[list[RecordedEvent], int]:
    """Up to ``size`` records of the log after ``after``, and how many reads that took.

    With ``linger`` > 0, a short batch waits up to that many seconds for more events before
    it is handed on (fewer, fuller read-model commits under a trickle of events).
    """
    records = await store.read_all(after=after, limit=size)
    reads = 1
    if records and len(records) < size and linger > 0:
        deadline = time.monotonic() + linger
        while len(records) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await store.wait_for_new(records[-1].position, timeout=left)
            records.extend(
                await store.read_all(after=records[-1].position, limit=size - len(records))
            )
            reads += 1
    return records, reads


class ProjectionRunner:
    """Keeps one projection's tables up to date with the log.

    Args:
        store: the open event store to read.
        models: the open read-model backend to write.
        projection: what to fold.
        batch_size: log entries per read and per transaction.
    """

    def __init__(
        self,
        store: EventStore,
        models: ReadModels,
        projection: Projection,
        *,
        batch_size: int = 500,
    ) -> None:
        self.store = store
        self.models = models
        self.projection = projection
        self.batch_size = batch_size
        self.checkpoint_interval = 1.0
        """Seconds a running runner may hold folded-but-unsaved empty batches (see the
        module docstring)."""
        self.linger = 0.0
        """Seconds a running runner keeps between two commits, at least, by waiting to fill a
        short batch (0: never waits; see the module docstring)."""
        self.running = False
        self.rebuilding = False
        self.last_error: str | None = None
        self.folded = 0
        """Log entries this runner folded in this process (for tests and benches)."""
        self.commits = 0
        """Read-model transactions this runner committed in this process."""
        self._ensured = False
        self._log = get_logger("contexten.projections").bind(projection=projection.name)

    async def ensure(self) -> None:
        """Create the projection's tables if missing (once per runner)."""
        if not self._ensured:
            await self.models.ensure(self.projection)
            self._ensured = True

    async def step(self, *, shadow: bool = False) -> tuple[int, int]:
        """Fold one batch; return ``(position, events read)`` (0 read: caught up).

        Raises:
            ProjectionConflict: the checkpoint moved under the batch (nothing written).
        """
        await self.ensure()
        checkpoint = await self.models.checkpoint(self.projection.name, shadow=shadow)
        position, read, batch = await self._fold(checkpoint.position, shadow=shadow)
        if batch is None:
            return position, 0
        await self.models.commit(
            self.projection,
            batch.writes,
            expected=checkpoint.position,
            position=position,
            shadow=shadow,
        )
        self.commits += 1
        return position, read

    async def _fold(
        self, after: int, *, shadow: bool = False, linger: float = 0.0
    ) -> tuple[int, int, ProjectionBatch | None]:
        """Fold the batch after ``after`` (nothing committed): its last position, how many
        events it read, and the batch (None when there was nothing to read). With
        ``linger``, a short batch waits that long for more events first."""
        records, _ = await read_batch(self.store, after, self.batch_size, linger)
        if not records:
            return after, 0, None
        return records[-1].position, len(records), await self.fold(records, shadow=shadow)

    async def fold(
        self, records: Sequence[RecordedEvent], *, shadow: bool = False
    ) -> ProjectionBatch:
        """Fold ``records`` (read from the log, in order) into a new batch; nothing is
        committed. :class:`~contexten.projections.fanout.ProjectionFanout` calls this with
        the records it read once for several projections."""
        batch = ProjectionBatch(
            self.models, {t.name: t for t in self.projection.tables}, shadow=shadow
        )
        for record in records:
            if self.projection.handles(record):
                await self.projection.apply(record, batch)
        await self.projection.flush(batch)
        self.folded += len(records)
        return batch

    async def catch_up(self, *, until: int | None = None, progress: Progress | None = None) -> int:
        """Fold until the log's head (as it is now, or ``until``); return the position.

        Tables written by another :attr:`Projection.version` are rebuilt first, as
        :meth:`run` does: folding on from their checkpoint would mark them current with
        rows the old version wrote (a reader such as the CLI may be the first to meet a
        new version).
        """
        await self.ensure()
        checkpoint = await self.models.checkpoint(self.projection.name)
        if checkpoint.version not in (0, self.projection.version):
            self._log.info("projection version changed; rebuilding", was=checkpoint.version)
            await self.rebuild(progress=progress)
        target = until if until is not None else await self.store.head()
        position = (await self.models.checkpoint(self.projection.name)).position
        while position < target:
            try:
                position, read = await self.step()
            except ProjectionConflict:
                position = (await self.models.checkpoint(self.projection.name)).position
                continue
            if progress is not None:
                progress(position, target)
            if read == 0:
                break
        return position

    async def run(self, *, idle_wait: float = 1.0) -> None:
        """Fold forever, waiting for new events when caught up (for the supervisor).

        Tables written by another :attr:`Projection.version` are rebuilt first. A failing
        ``apply`` raises out (the supervisor restarts this with backoff) after
        recording the error in :attr:`last_error` for health to report.
        """
        await self.prepare()
        self.running = True
        saved = folded = (await self.models.checkpoint(self.projection.name)).position
        saved_at = time.monotonic()
        committed_at = float("-inf")  # the last commit of rows: the linger counts from it
        try:
            while True:
                try:
                    linger = linger_left(self.linger, committed_at)
                    position, read, batch = await self._fold(folded, linger=linger)
                    now = time.monotonic()
                    due = now - saved_at >= self.checkpoint_interval
                    if batch is not None and (batch.writes or due):
                        await self.save(batch, saved, position)
                        saved, saved_at = position, now
                        if len(batch):
                            committed_at = now
                    elif batch is None and folded > saved and due:  # caught up, save now
                        await self.save(None, saved, folded)
                        saved, saved_at = folded, now
                    folded = position
                except ProjectionConflict:
                    self._log.info("checkpoint moved (another runner or a rebuild); re-reading")
                    saved = folded = (await self.models.checkpoint(self.projection.name)).position
                    continue
                except Exception as e:
                    self.last_error = f"{type(e).__name__}: {str(e)[:200]}"
                    raise
                self.last_error = None
                if read == 0:
                    wait = idle_wait
                    if folded > saved:  # wake in time to save the position
                        left = self.checkpoint_interval - (time.monotonic() - saved_at)
                        wait = min(idle_wait, max(left, 0.0))
                    await self.store.wait_for_new(folded, timeout=wait)
        finally:
            self.running = False

    async def prepare(self) -> None:
        """Create the tables if missing; rebuild them if another :attr:`Projection.version`
        wrote them (before folding new events into them)."""
        await self.ensure()
        checkpoint = await self.models.checkpoint(self.projection.name)
        if checkpoint.version not in (0, self.projection.version):
            self._log.info("projection version changed; rebuilding", was=checkpoint.version)
            await self.rebuild()

    async def save(self, batch: ProjectionBatch | None, expected: int, position: int) -> None:
        """Commit ``batch``'s rows (if any) and move the checkpoint from ``expected`` to
        ``position``, in one transaction."""
        await self.models.commit(
            self.projection,
            batch.writes if batch is not None else [],
            expected=expected,
            position=position,
        )
        self.commits += 1

    async def rebuild(self, *, progress: Progress | None = None) -> int:
        """Fold the whole log into shadow tables, then swap them in; return the position.

        The live tables serve (and the live runner keeps folding) until the swap. After the
        swap, the checkpoint is the shadow's: a live runner that had gone further re-folds
        the few events past it into the new tables.
        """
        await self.ensure()
        await self.models.start_shadow(self.projection)
        self.rebuilding = True
        try:
            while True:
                head = await self.store.head()
                position = (
                    await self.models.checkpoint(self.projection.name, shadow=True)
                ).position
                while position < head:
                    position, read = await self.step(shadow=True)
                    if progress is not None:
                        progress(position, head)
                    if read == 0:
                        break
                if position >= await self.store.head():
                    break
            swapped = await self.models.swap(self.projection)
        finally:
            self.rebuilding = False
        self._log.info("projection rebuilt", position=swapped)
        return swapped

    async def status(self) -> ProjectionStatus:
        """Position, lag, version and state."""
        checkpoint = await self.models.checkpoint(self.projection.name)
        head = await self.store.head()
        if self.rebuilding:
            state = "rebuilding"
        elif self.last_error is not None:
            state = "failing"
        elif self.running:
            state = "running"
        else:
            state = "idle"
        return ProjectionStatus(
            name=self.projection.name,
            position=checkpoint.position,
            head=head,
            lag=max(0, head - checkpoint.position),
            version=checkpoint.version,
            stale=checkpoint.version not in (0, self.projection.version),
            state=state,
            last_error=self.last_error,
            updated_at=checkpoint.updated_at,
        )
