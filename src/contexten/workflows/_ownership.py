"""Which engine runs which instance, so two processes never both execute one instance.

Optimistic concurrency already guarantees that two engines cannot both *advance* an
instance's history; ownership keeps them from both *executing* it (running its steps twice).
Each engine has an owner id, ``host/pid/random``; an instance's stream records its owner (in
``started``, then in ``claimed`` when another engine takes it over). An engine resumes an
instance only if it owns it or the owner is gone, and claims it first with an append that
names the stream version it read, so of two engines adopting the same orphan only one wins.

An engine is a worker of the store's worker registry (the one the dispatcher's partition
leases use, see :mod:`contexten.bus.partitions`): it registers under its owner id and renews
its registration every ``heartbeat`` seconds, with times from the store's clock, never the
engines' own. An owner is gone when: it is this process's and no longer running here; or it
ran on this host under a process id that no longer exists (a ``kill -9`` is noticed at once,
unless ``reap_local`` is off); or its registration lapsed (no heartbeat for ``lease`` seconds
by the store's clock: another host that died), so its instances are adopted within a lease
and a heartbeat (see :mod:`contexten.workflows._adoption`).

Engines of earlier versions beat a ``$wf-owner:{id}`` checkpoint of wall-clock seconds
instead; such an owner counts as alive while that beat is fresh, so a rolling upgrade does
not adopt instances a running older engine still executes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from contexten.bus.partitions import local_worker_gone, new_worker_id, of_this_process
from contexten.store.base import EventStore

__all__ = ["Ownership", "new_owner_id"]

_log = logging.getLogger("contexten.workflows")
_LIVE: set[str] = set()  # owners running in this process


def new_owner_id() -> str:
    """A fresh owner id for an engine of this process (a worker id: ``host/pid/random``)."""
    return new_worker_id()


class Ownership:
    """An engine's owner id, its heartbeat, and the test of whether another owner is gone."""

    def __init__(
        self, store: EventStore, owner: str, lease: float, *, reap_local: bool = True
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease = lease
        self.reap_local = reap_local
        self._cache: dict[str, tuple[float, bool]] = {}

    @staticmethod
    def _key(owner: str) -> str:
        return f"$wf-owner:{owner}"

    async def beat(self) -> None:
        """Renew this engine's registration (it lasts ``lease`` seconds by the store's clock)."""
        _LIVE.add(self.owner)
        await self.store.heartbeat(self.owner, ttl=self.lease, meta="workflow engine")

    async def release(self) -> None:
        """Stop owning: others may adopt this engine's instances at once."""
        _LIVE.discard(self.owner)
        try:
            await self.store.remove_worker(self.owner)
        except Exception as e:
            # Best effort (stop() runs on shutdown and on a failed start, the store may be
            # down): without the release, other engines adopt our instances once the lease
            # lapses instead of at once.
            _log.warning("could not release owner %s (%s); its lease will lapse", self.owner, e)

    def forget(self, owners: Iterable[str]) -> None:
        """Drop what was cached about ``owners`` (they just left the registry)."""
        for owner in owners:
            self._cache.pop(owner, None)

    async def gone(self, owner: str | None) -> bool:
        """Whether ``owner``'s instances may be taken over."""
        if owner is None:
            return True
        if owner == self.owner:
            return False
        cached = self._cache.get(owner)
        now = time.monotonic()
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        result = await self._gone(owner)
        self._cache[owner] = (now, result)
        return result

    async def _gone(self, owner: str) -> bool:
        if of_this_process(owner):
            return owner not in _LIVE
        if self.reap_local and local_worker_gone(owner):
            return True
        if any(w.worker_id == owner for w in await self.store.workers()):
            return False
        legacy = await self.store.get_checkpoint(self._key(owner))
        return not legacy or time.time() - legacy > self.lease
