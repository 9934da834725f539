"""Concurrency limits per workflow and per key, held only while an instance runs.

Slots live in memory and are taken again whenever an instance resumes, so a crash cannot leak
one: after a restart the counts start from zero and each resumed instance takes its slot back.
A waiting or sleeping instance gives its slot up while it is parked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["Limiter", "Slot"]


@dataclass(eq=False)
class _Counted:
    semaphore: asyncio.Semaphore
    users: int = 0


@dataclass(eq=False)
class Limiter:
    """At most ``max_concurrent`` running instances, and ``max_per_key`` per key."""

    max_concurrent: int | None = None
    max_per_key: int | None = None
    _global: asyncio.Semaphore | None = None
    _keys: dict[str, _Counted] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for value in (self.max_concurrent, self.max_per_key):
            if value is not None and value < 1:
                raise ValueError("concurrency limits must be at least 1")
        if self.max_concurrent is not None:
            self._global = asyncio.Semaphore(self.max_concurrent)

    @property
    def unlimited(self) -> bool:
        """Whether this limiter never makes anyone wait."""
        return self.max_concurrent is None and self.max_per_key is None

    def slot(self, key: str | None) -> Slot:
        """A slot handle for an instance whose concurrency key is ``key``."""
        return Slot(self, key if self.max_per_key is not None else None)


@dataclass(eq=False)
class Slot:
    """One instance's claim on its limiter; acquire and release as it runs and parks."""

    limiter: Limiter
    key: str | None
    held: bool = False

    async def acquire(self) -> None:
        """Wait for a free slot (per key first, then overall). No-op if already held."""
        if self.held or self.limiter.unlimited:
            self.held = True
            return
        counted = None
        if self.key is not None and self.limiter.max_per_key is not None:
            counted = self.limiter._keys.get(self.key)
            if counted is None:
                counted = self.limiter._keys[self.key] = _Counted(
                    asyncio.Semaphore(self.limiter.max_per_key)
                )
            counted.users += 1
            try:
                await counted.semaphore.acquire()
            except BaseException:
                self._forget(counted)
                raise
        if self.limiter._global is not None:
            try:
                await self.limiter._global.acquire()
            except BaseException:
                if counted is not None:
                    counted.semaphore.release()
                    self._forget(counted)
                raise
        self.held = True

    def release(self) -> None:
        """Give the slot back. No-op if not held."""
        if not self.held:
            return
        self.held = False
        if self.limiter.unlimited:
            return
        if self.limiter._global is not None:
            self.limiter._global.release()
        if self.key is not None:
            counted = self.limiter._keys.get(self.key)
            if counted is not None:
                counted.semaphore.release()
                self._forget(counted)

    def _forget(self, counted: _Counted) -> None:
        counted.users -= 1
        if counted.users <= 0 and self.key is not None:
            self.limiter._keys.pop(self.key, None)
