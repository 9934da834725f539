"""Which engine runs which instance, so two processes never both execute one instance.

Optimistic concurrency already guarantees that two engines cannot both *advance* an
instance's history; ownership keeps them from both *executing* it (running its steps twice).
Each engine has an owner id, ``host/pid/random``; an instance's stream records its owner (in
``started``, then in ``claimed`` when another engine takes it over). An engine resumes an
instance only if it owns it or the owner is gone, and claims it first with an append that
names the stream version it read, so of two engines adopting the same orphan only one wins.

An owner is gone when: it is this process's and no longer running here; or it ran on this
host under a process id that no longer exists (a ``kill -9`` is noticed at once); or its
heartbeat, a checkpoint ``$wf-owner:{id}`` holding wall-clock seconds and renewed every
``lease / 3`` seconds, is older than ``lease`` (another host that died).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import Final

from contexten.store.base import EventStore

__all__ = ["Ownership", "new_owner_id"]

_log = logging.getLogger("contexten.workflows")
_HOST: Final = socket.gethostname().replace("/", "_")
_LIVE: set[str] = set()  # owners running in this process


def new_owner_id() -> str:
    """A fresh owner id for an engine of this process."""
    return f"{_HOST}/{os.getpid()}/{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ownership:
    """An engine's owner id, its heartbeat, and the test of whether another owner is gone."""

    def __init__(self, store: EventStore, owner: str, lease: float) -> None:
        self.store = store
        self.owner = owner
        self.lease = lease
        self._cache: dict[str, tuple[float, bool]] = {}

    @staticmethod
    def _key(owner: str) -> str:
        return f"$wf-owner:{owner}"

    async def beat(self) -> None:
        """Renew this engine's heartbeat."""
        _LIVE.add(self.owner)
        await self.store.save_checkpoint(self._key(self.owner), int(time.time()))

    async def release(self) -> None:
        """Stop owning: others may adopt this engine's instances at once."""
        _LIVE.discard(self.owner)
        try:
            await self.store.save_checkpoint(self._key(self.owner), 0)
        except Exception as e:
            # Best effort (stop() runs on shutdown and on a failed start, the store may be
            # down): without the release, other engines adopt our instances once the lease
            # lapses instead of at once.
            _log.warning("could not release owner %s (%s); its lease will lapse", self.owner, e)

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
        host, _, rest = owner.partition("/")
        pid_text = rest.partition("/")[0]
        if host == _HOST and pid_text.isdigit():
            pid = int(pid_text)
            if pid == os.getpid():
                return owner not in _LIVE
            if not _pid_alive(pid):
                return True
        beat = await self.store.get_checkpoint(self._key(owner))
        return not beat or time.time() - beat > self.lease
