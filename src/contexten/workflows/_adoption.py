"""The engine's heartbeat: renew its worker registration, adopt the instances of dead engines.

Every ``heartbeat`` seconds the engine renews its registration in the store's worker registry
(the one the dispatcher's partition leases use) and reads the live workers. When a worker it
saw alive is no longer there (its registration lapsed: no heartbeat for a lease by the
store's clock; or it was removed: a clean stop, or a dead process of this host reaped), the
engine scans the unfinished instances at once and adopts those whose owner is gone, so a dead
worker's instances move within a lease plus a heartbeat, as its partitions do. A slower scan
every ``adopt_interval`` seconds catches what no departure announced (an engine that died
before this one first saw it).

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

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["AdoptionState", "adopt_orphans", "run_heartbeat"]

_log = logging.getLogger("contexten.workflows")
_CHUNK = 512


class AdoptionState:
    """What the heartbeat remembers between beats (and across restarts of its loop)."""

    def __init__(self) -> None:
        self.last_scan = time.monotonic()
        self.seen: set[str] = set()
        """The workers alive at the previous beat."""


async def adopt_orphans(engine: WorkflowEngine) -> int:
    """Resume (claiming first) every unfinished function instance whose owner is gone;
    returns how many instances were looked at."""
    orphans = [s for s in await engine._unfinished() if s.kind == "function"]
    for i in range(0, len(orphans), _CHUNK):
        await asyncio.gather(*(engine._resume(s) for s in orphans[i : i + _CHUNK]))
    return len(orphans)


async def _beat(engine: WorkflowEngine, state: AdoptionState) -> None:
    await engine.ownership.beat()
    live = {w.worker_id for w in await engine.store.workers()}
    if engine.ownership.reap_local:
        live = {w for w in live if not local_worker_gone(w)}
    departed = state.seen - live - {engine.ownership.owner}
    state.seen = live
    periodic = engine.adopt_interval and (
        time.monotonic() - state.last_scan >= engine.adopt_interval
    )
    if departed or periodic:
        if departed:
            _log.warning(
                "workflow engine: worker(s) %s gone; adopting their instances",
                ", ".join(sorted(departed)),
            )
        state.last_scan = time.monotonic()
        engine.ownership.forget(departed)
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
