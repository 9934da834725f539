"""One log reader for several projections: each batch is read once and folded into each.

Running N projections as N :meth:`~contexten.projections.runner.ProjectionRunner.run` loops
reads (and decodes) every log entry N times; in a busy process that was most of what the
read side cost. :class:`ProjectionFanout` reads each batch once, from the lowest position
among the projections it runs, and hands every projection the records past its own
position; the batches they fold from one read are committed together
(:meth:`~contexten.projections.base.ReadModels.commit_many`: one transaction on SQLite).
Each projection keeps everything that is its own: its checkpoint (each batch is still a
compare-and-swap on its own checkpoint, so a conflict drops only that projection's
batch), the runner's
commit batching (:attr:`~ProjectionRunner.checkpoint_interval`; the reader keeps the
longest :attr:`~ProjectionRunner.linger` of its projections between two commits, waiting
to fill a short batch), its version check and
rebuild (run when it joins, before it folds anything: see :meth:`ProjectionRunner.prepare`).

A projection whose ``apply`` fails does not hold the others up: its error is recorded for
health (:attr:`ProjectionRunner.last_error`), its uncommitted batch is dropped and it is
left out of the reads until a backoff (1 s, doubling to 30 s) has passed; then it goes on
from its checkpoint. A failure to read the log raises out of :meth:`run` (its supervisor
restarts it; every projection then goes on from its checkpoint).

Which projections a process runs is decided by their leases (see
:mod:`contexten.projections.ownership`): :meth:`join` and :meth:`leave` may be called at
any time while :meth:`run` runs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from contexten.exceptions import ProjectionConflict
from contexten.observability.logging import get_logger
from contexten.projections.base import Commit, ProjectionBatch
from contexten.projections.runner import ProjectionRunner, linger_left, read_batch
from contexten.store.base import EventStore, RecordedEvent

__all__ = ["ProjectionFanout"]

_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0


@dataclass(slots=True)
class _Save:
    """What a lane has folded and not committed: its batch (None: only its position) and
    the position to move its checkpoint to."""

    lane: _Lane
    batch: ProjectionBatch | None
    position: int


@dataclass(slots=True)
class _Lane:
    """One projection in the fan-out: its committed and folded positions."""

    runner: ProjectionRunner
    saved: int = 0
    """Its checkpoint as last committed (or read)."""
    folded: int = 0
    """Folded up to here; ``folded > saved``: folded batches that wrote no rows, not saved."""
    saved_at: float = 0.0
    retry_at: float = 0.0
    """While failing: not read for until this (monotonic) time."""
    backoff: float = 0.0
    loaded: bool = False
    """Whether ``saved``/``folded`` were read from the checkpoint since the reader started."""


class ProjectionFanout:
    """Folds the log into every projection that :meth:`join`-ed, reading each batch once.

    Args:
        store: the open event store to read.
        batch_size: log entries per read.
    """

    def __init__(self, store: EventStore, *, batch_size: int = 500) -> None:
        self.store = store
        self.batch_size = batch_size
        self.reads = 0
        """Log reads this fan-out made (for tests and benches)."""
        self.records_read = 0
        """Log entries those reads returned."""
        self._lanes: dict[str, _Lane] = {}
        self._committed_at = float("-inf")
        """When (monotonic) the last batch of rows was committed (the linger counts from it)."""
        self._lock = asyncio.Lock()
        self._log = get_logger("contexten.projections")

    @property
    def names(self) -> list[str]:
        """The projections it runs now."""
        return list(self._lanes)

    async def join(self, runner: ProjectionRunner) -> None:
        """Start folding into ``runner``'s projection (after creating its tables and, if its
        version changed, rebuilding them). Nothing if it runs already."""
        name = runner.projection.name
        if name in self._lanes:
            return
        await runner.prepare()
        async with self._lock:
            lane = _Lane(runner)
            await self._load(lane)
            self._lanes[name] = lane
            runner.running = True

    async def leave(self, name: str) -> None:
        """Stop folding into projection ``name``, saving the position it folded to (if it
        wrote no rows since its last commit). Nothing if it does not run here."""
        async with self._lock:
            lane = self._lanes.pop(name, None)
            if lane is None:
                return
            lane.runner.running = False
            if lane.loaded and lane.folded > lane.saved and lane.runner.last_error is None:
                try:
                    await lane.runner.save(None, lane.saved, lane.folded)
                except ProjectionConflict:
                    pass  # someone else moved it on: nothing of ours is lost
                except Exception as e:  # its rows are committed; only a refold is left
                    self._log.warning(
                        "could not save a projection's position on leaving; its next owner "
                        "folds those events again (they write nothing)",
                        projection=name,
                        error_type=type(e).__name__,
                    )

    async def leave_all(self) -> None:
        """:meth:`leave` every projection (at shutdown)."""
        for name in list(self._lanes):
            await self.leave(name)

    async def _load(self, lane: _Lane) -> None:
        checkpoint = await lane.runner.models.checkpoint(lane.runner.projection.name)
        lane.saved = lane.folded = checkpoint.position
        lane.saved_at = time.monotonic()
        lane.loaded = True

    async def run(self, *, idle_wait: float = 1.0) -> None:
        """Fold forever, waiting for new events when every projection is caught up."""
        for lane in self._lanes.values():
            lane.loaded = False  # a restart after a crash: start from the checkpoints
        while True:
            now = time.monotonic()
            lanes = [lane for lane in self._lanes.values() if lane.retry_at <= now]
            if not lanes:
                await asyncio.sleep(idle_wait if not self._lanes else min(idle_wait, 0.2))
                continue
            for lane in lanes:
                if not lane.loaded:
                    await self._load(lane)
            after = min(lane.folded for lane in lanes)
            linger = linger_left(max(lane.runner.linger for lane in lanes), self._committed_at)
            records = await self._read(after, linger)
            async with self._lock:
                saves: list[_Save] = []
                for lane in lanes:
                    if self._lanes.get(lane.runner.projection.name) is lane:
                        save = await self._fold(lane, records)
                        if save is not None:
                            saves.append(save)
                if saves:
                    await self._save(saves)
                    if any(save.batch is not None and len(save.batch) for save in saves):
                        self._committed_at = time.monotonic()
            if not records:
                await self.store.wait_for_new(after, timeout=self._idle_timeout(idle_wait))

    def _idle_timeout(self, idle_wait: float) -> float:
        """How long to wait for new events: wake in time to save a lane's position or to
        retry a failing one."""
        now = time.monotonic()
        wait = idle_wait
        for lane in self._lanes.values():
            if lane.retry_at > now:
                wait = min(wait, lane.retry_at - now)
            elif lane.folded > lane.saved:
                left = lane.runner.checkpoint_interval - (now - lane.saved_at)
                wait = min(wait, max(left, 0.0))
        return wait

    async def _read(self, after: int, linger: float) -> list[RecordedEvent]:
        records, reads = await read_batch(self.store, after, self.batch_size, linger)
        self.reads += reads
        self.records_read += len(records)
        return records

    async def _fold(self, lane: _Lane, records: list[RecordedEvent]) -> _Save | None:
        """Fold into ``lane`` the records past its position; return what to commit, as the
        runner's :meth:`~ProjectionRunner.run` would (rows at once; an empty batch's
        position with the next rows or after ``checkpoint_interval``), or None."""
        runner = lane.runner
        mine = records if records and records[0].position > lane.folded else None
        if mine is None:
            mine = [r for r in records if r.position > lane.folded]
        now = time.monotonic()
        due = now - lane.saved_at >= runner.checkpoint_interval
        if not mine:
            if lane.folded > lane.saved and due and len(records) < self.batch_size:
                return _Save(lane, None, lane.folded)  # caught up: save now
            return None
        try:
            batch = await runner.fold(mine)
        except Exception as e:
            self._failed(lane, e)
            return None
        position = mine[-1].position
        if batch.writes or due:
            return _Save(lane, batch, position)
        lane.folded = position
        runner.last_error = None
        lane.backoff = 0.0
        return None

    async def _save(self, saves: list[_Save]) -> None:
        """Commit the folded batches of several projections together (see
        :meth:`~contexten.projections.base.ReadModels.commit_many`): one transaction where
        the backend can, each batch conditional on its own checkpoint."""
        by_models: dict[int, list[_Save]] = {}
        for save in saves:
            by_models.setdefault(id(save.lane.runner.models), []).append(save)
        for group in by_models.values():
            commits = [
                Commit(
                    s.lane.runner.projection,
                    s.batch.writes if s.batch is not None else [],
                    s.lane.saved,
                    s.position,
                )
                for s in group
            ]
            try:
                conflicted = await group[0].lane.runner.models.commit_many(commits)
            except Exception as e:
                for save in group:
                    self._failed(save.lane, e)
                continue
            now = time.monotonic()
            for save in group:
                lane, runner = save.lane, save.lane.runner
                if runner.projection.name in conflicted:
                    self._log.info(
                        "checkpoint moved (another runner or a rebuild); re-reading",
                        projection=runner.projection.name,
                    )
                    await self._load(lane)
                    continue
                runner.commits += 1
                lane.saved = lane.folded = save.position
                lane.saved_at = now
                runner.last_error = None
                lane.backoff = 0.0

    def _failed(self, lane: _Lane, error: Exception) -> None:
        """A fold or a commit of ``lane`` failed: record it for health, drop its uncommitted
        batch and leave it out of the reads for a backoff."""
        runner = lane.runner
        runner.last_error = f"{type(error).__name__}: {str(error)[:200]}"
        lane.backoff = min(max(lane.backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
        lane.retry_at = time.monotonic() + lane.backoff
        lane.loaded = False  # its uncommitted batch is dropped: go on from the checkpoint
        self._log.error(
            "projection failed; retrying from its checkpoint",
            projection=runner.projection.name,
            retry_in=lane.backoff,
            exc_info=error,
        )
