"""The engine's heartbeat: renew its worker registration, adopt the instances of dead engines.

The engine knows who owns each unfinished function instance (:class:`Owners`): its tail sees
every ``started`` and ``claimed`` event in the log, and its start-up recovery folds the
instances started before. Every ``heartbeat`` seconds it renews its registration in the
store's worker registry (the one the dispatcher's partition leases use) and reads the live
workers; the instances whose owner is no longer live (its registration lapsed: no heartbeat
for a lease by the store's clock; or it was removed: a clean stop, or a dead process of this
host reaped) are folded and claimed at once, so a dead worker's instances move within a
lease plus a heartbeat, as its partitions do, however briefly that worker lived. A full scan
every ``adopt_interval`` seconds catches anything else (an owner that looked alive when its
instance was last tried).

The loop runs under the engine's supervisor: a store error is logged and retried at the next
beat, anything else crashes the loop, which the supervisor restarts with backoff and shows
in the app's health.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from contexten.bus.partitions import local_worker_gone
from contexten.exceptions import StoreClosed, StoreError
from contexten.store.base import RecordedEvent
from contexten.workflows import admin
from contexten.workflows.history import (
    CANCELLED,
    CLAIMED,
    COMPENSATED,
    COMPLETED,
    FAILED,
    STARTED,
    STREAM_PREFIX,
    WorkflowState,
    workflow_id_of,
)

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["AdoptionState", "Owners", "adopt_orphans", "run_heartbeat"]

_log = logging.getLogger("contexten.workflows")
_CHUNK = 512
_ENDS = frozenset({COMPLETED, FAILED, COMPENSATED, CANCELLED})


class Owners:
    """The owner of each unfinished function instance, as this engine last saw it."""

    def __init__(self) -> None:
        self._by_id: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def see(self, rec: RecordedEvent) -> None:
        """Follow one history event of the log (the tail hands it every ``$wf-`` event)."""
        kind = rec.event.type
        if not rec.stream.startswith(STREAM_PREFIX) or kind not in (STARTED, CLAIMED, *_ENDS):
            return
        wid = workflow_id_of(rec.stream)
        if wid is None:
            return
        if kind in _ENDS:
            self._by_id.pop(wid, None)
            return
        data = rec.event.data
        owner = data.get("owner") if isinstance(data, dict) else None
        if isinstance(owner, str) and (kind == CLAIMED or data.get("kind") == "function"):
            self._by_id[wid] = owner

    def know(self, state: WorkflowState) -> None:
        """Record a folded unfinished instance's owner (start-up recovery)."""
        if state.kind == "function" and state.owner and not state.terminal:
            self._by_id[state.workflow_id] = state.owner

    def orphans(self, live: set[str], me: str) -> dict[str, str]:
        """The instances (id -> owner) whose owner is neither live nor ``me``."""
        return {w: o for w, o in self._by_id.items() if o != me and o not in live}

    def drop(self, orphans: dict[str, str]) -> None:
        """Stop following instances tried for adoption, unless their owner changed since
        (a claim that succeeded is seen again by the tail)."""
        for wid, owner in orphans.items():
            if self._by_id.get(wid) == owner:
                del self._by_id[wid]


class AdoptionState:
    """What the heartbeat remembers between beats (and across restarts of its loop)."""

    def __init__(self) -> None:
        self.last_scan = time.monotonic()


async def adopt_orphans(engine: WorkflowEngine) -> int:
    """Resume (claiming first) every unfinished function instance whose owner is gone;
    returns how many instances were looked at."""
    orphans = [s for s in await engine._unfinished() if s.kind == "function"]
    await _resume_all(engine, orphans)
    return len(orphans)


async def _resume_all(engine: WorkflowEngine, states: list[WorkflowState]) -> None:
    for i in range(0, len(states), _CHUNK):
        await asyncio.gather(*(engine._resume(s) for s in states[i : i + _CHUNK]))


async def _adopt(engine: WorkflowEngine, orphans: dict[str, str]) -> None:
    ids = [wid for wid in orphans if wid not in engine._live]
    states: list[WorkflowState] = []
    for i in range(0, len(ids), _CHUNK):
        found = await asyncio.gather(
            *(admin.load_state(engine.store, wid) for wid in ids[i : i + _CHUNK])
        )
        states.extend(s for s in found if s is not None and not s.terminal)
    await _resume_all(engine, states)


async def _beat(engine: WorkflowEngine, state: AdoptionState) -> None:
    await engine.ownership.beat()
    live = {w.worker_id for w in await engine.store.workers()}
    if engine.ownership.reap_local:
        live = {w for w in live if not local_worker_gone(w)}
    orphans = engine.owners.orphans(live, engine.ownership.owner)
    if orphans:
        gone = sorted(set(orphans.values()))
        _log.warning(
            "workflow engine: owner(s) %s gone; adopting %d instance(s)",
            ", ".join(gone),
            len(orphans),
        )
        engine.ownership.forget(gone)
        await _adopt(engine, orphans)
        engine.owners.drop(orphans)
    if engine.adopt_interval and time.monotonic() - state.last_scan >= engine.adopt_interval:
        state.last_scan = time.monotonic()
        await adopt_orphans(engine)


async def run_heartbeat(engine: WorkflowEngine, state: AdoptionState) -> None:
    """Beat and adopt until the engine stops (see the module docstring)."""
    while engine.running:
        try:
            await _beat(engine, state)
        except asyncio.CancelledError:
            raise
        except StoreClosed:
            return
        except StoreError as e:
            _log.warning("workflow engine heartbeat: store error, retrying: %s", e)
        await asyncio.sleep(engine.heartbeat)
