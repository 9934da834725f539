"""Concurrency limits per workflow and per key, held only while an instance runs, across
every process on the store.

A limit is a group of slots in the store (:meth:`~contexten.store.base.EventStore.acquire_slot`):
``wf:{name}`` for ``max_concurrent``, ``wf:{name}:key:{key}`` for ``max_per_key``. A running
instance holds one slot of each group that limits it, named by its instance id and owned by
its engine's worker id; a slot counts only while that worker is live in the store's worker
registry, so the slots of a process that died free up when its lease lapses (at once when it
stopped cleanly), and a restarted or adopting engine takes them again as it resumes the
instances. A waiting or sleeping instance gives its slots up while it is parked.

Inside one process, a semaphore per group admits at most the limit to the store, in arrival
order. While nobody of this process waits for the group, each asks the store at once; once
one was refused, they queue and one at a time asks: again as soon as a slot of this process
is given back, or after a short poll (a slot given back by another process), so waiting
costs at most a few queries a second per group and process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Final

from contexten.exceptions import StoreClosed, StoreError
from contexten.store.base import EventStore

__all__ = ["Limiter", "Slot"]

_log = logging.getLogger("contexten.workflows")

_POLL_FIRST: Final = 0.05
_POLL_MAX: Final = 1.0
"""Seconds between asks while the store has no free slot, doubling from the first to the
last (a slot given back in this process wakes the asker at once)."""
_RELEASE_TRIES: Final = 3


class _Gate:
    """One group's slots as this process sees them: a local admission semaphore, the turn to
    ask the store, and a signal that a slot of this process was given back."""

    def __init__(
        self, group: str, limit: int, key: str | None, leaked: set[tuple[str, str]]
    ) -> None:
        self.group = group
        self.limit = limit
        self.key = key
        self._leaked = leaked
        self.users = 0
        self._local = asyncio.Semaphore(limit)
        self._turn = asyncio.Lock()
        self._freed = asyncio.Event()

    async def take(self, store: EventStore, holder: str, owner: str) -> None:
        """Wait until the store gives ``holder`` a slot of the group."""
        await self._local.acquire()
        try:
            if (  # nobody waits: just ask
                not self._turn.locked()
                and not self._leaked
                and await store.acquire_slot(self.group, holder, owner, limit=self.limit)
            ):
                return
            async with self._turn:
                await _retry_leaked(store, self._leaked)
                delay = _POLL_FIRST
                while True:
                    self._freed.clear()
                    if await store.acquire_slot(self.group, holder, owner, limit=self.limit):
                        self._leaked.discard((self.group, holder))
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._freed.wait()
                    delay = min(delay * 2, _POLL_MAX)
        except BaseException:
            self._local.release()
            raise

    async def give(self, store: EventStore, holder: str) -> None:
        """Give ``holder``'s slot back: in the store, then locally.

        A store that keeps failing does not hold the instance up for long (a few tries,
        then it moves on): the slot is remembered and given back before this limiter's
        next acquire; meanwhile it counts against the limit, until then or until this
        worker stops or its lease lapses.
        """
        try:
            delay = 0.1
            for attempt in range(1, _RELEASE_TRIES + 1):
                try:
                    await store.release_slot(self.group, holder)
                    return
                except StoreClosed:
                    return  # shutting down: the worker's removal (or lease) frees it
                except StoreError as e:
                    if attempt == _RELEASE_TRIES:
                        self._leaked.add((self.group, holder))
                        _log.error(
                            "could not give back a slot of %s (%s); retrying before the next "
                            "acquire",
                            self.group,
                            e,
                        )
                        return
                    await asyncio.sleep(delay)
                    delay *= 2
        finally:
            self._local.release()
            self._freed.set()


async def _retry_leaked(store: EventStore, leaked: set[tuple[str, str]]) -> None:
    """Give back the slots an earlier release could not (while the store keeps failing,
    they stay remembered)."""
    for group, holder in list(leaked):
        if (group, holder) not in leaked:  # its holder took a slot again meanwhile
            continue
        try:
            await store.release_slot(group, holder)
        except StoreError:
            return
        leaked.discard((group, holder))


@dataclass(eq=False)
class Limiter:
    """At most ``max_concurrent`` running instances of workflow ``name``, and ``max_per_key``
    per key, counted over every process on the store."""

    max_concurrent: int | None = None
    max_per_key: int | None = None
    name: str = ""
    _global: _Gate | None = None
    _keys: dict[str, _Gate] = field(default_factory=dict)
    _leaked: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for value in (self.max_concurrent, self.max_per_key):
            if value is not None and value < 1:
                raise ValueError("concurrency limits must be at least 1")

    @property
    def unlimited(self) -> bool:
        """Whether this limiter never makes anyone wait."""
        return self.max_concurrent is None and self.max_per_key is None

    def slot(self, key: str | None, *, holder: str, store: EventStore, owner: str) -> Slot:
        """A slot handle for instance ``holder`` (run by worker ``owner``) whose concurrency
        key is ``key``."""
        return Slot(self, key if self.max_per_key is not None else None, holder, store, owner)

    def _gates(self, key: str | None) -> list[_Gate]:
        """The gates an instance with ``key`` passes, per key first, then overall."""
        gates = []
        if key is not None and self.max_per_key is not None:
            gate = self._keys.get(key)
            if gate is None:
                gate = self._keys[key] = _Gate(
                    f"wf:{self.name}:key:{key}", self.max_per_key, key, self._leaked
                )
            gates.append(gate)
        if self.max_concurrent is not None:
            if self._global is None:
                self._global = _Gate(f"wf:{self.name}", self.max_concurrent, None, self._leaked)
            gates.append(self._global)
        return gates

    def _done_with(self, gate: _Gate) -> None:
        gate.users -= 1
        if gate.users <= 0 and gate.key is not None and self._keys.get(gate.key) is gate:
            del self._keys[gate.key]


@dataclass(eq=False)
class Slot:
    """One instance's claim on its limiter; acquire and release as it runs and parks."""

    limiter: Limiter
    key: str | None
    holder: str
    store: EventStore
    owner: str
    held: bool = False
    _taken: list[_Gate] = field(default_factory=list)

    async def acquire(self) -> None:
        """Wait for a free slot (per key first, then overall). No-op if already held."""
        if self.held or self.limiter.unlimited:
            self.held = True
            return
        try:
            for gate in self.limiter._gates(self.key):
                gate.users += 1
                try:
                    await gate.take(self.store, self.holder, self.owner)
                except BaseException:
                    self.limiter._done_with(gate)
                    raise
                self._taken.append(gate)
        except BaseException:
            await self._give_back()
            raise
        self.held = True

    async def release(self) -> None:
        """Give the slot back. No-op if not held."""
        if not self.held:
            return
        self.held = False
        await self._give_back()

    async def _give_back(self) -> None:
        taken, self._taken = self._taken, []
        for gate in reversed(taken):
            try:
                await gate.give(self.store, self.holder)
            finally:
                self.limiter._done_with(gate)
