"""Fault injection for the sandbox: throttling, server errors, latency, dropped connections.

A :class:`Fault` matches requests (platform, method, path prefix) and does one thing to them:

- ``"rate_limit"``: answer the way the platform throttles (GitHub 403 with
  ``X-RateLimit-Remaining: 0`` or 429 with ``Retry-After`` for its secondary limit, Slack 429
  with ``Retry-After``, Linear a ``RATELIMITED`` GraphQL error, Codegen 429);
- ``"status"``: answer ``status`` (e.g. 502) with the platform's error shape;
- ``"latency"``: wait ``latency`` seconds, then handle the request normally;
- ``"reset"``: drop the connection before doing anything;
- ``"lost_response"``: do the request (state changes!), then drop the connection before the
  response arrives: the case idempotency keys exist for.

Faults fire ``times`` times (``None``: until removed), with ``probability``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Fault", "FaultInjector", "FaultKind", "SandboxConnectionReset"]

FaultKind = Literal["rate_limit", "status", "latency", "reset", "lost_response"]


class SandboxConnectionReset(Exception):
    """Raised inside the sandbox to drop the client's connection (see the sandbox transport)."""


@dataclass(slots=True)
class Fault:
    """One injected fault; see the module docstring.

    Attributes:
        kind: what happens.
        platform: ``github``, ``linear``, ``slack``, ``codegen`` or ``None`` for all.
        method: HTTP method to match, or ``None``.
        path: path prefix within the platform (``/repos/acme/api/issues``), or GraphQL root
            field for Linear (``issueUpdate``), Slack method (``chat.postMessage``); ``None``
            matches all.
        status: the status a ``"status"`` fault answers.
        retry_after: seconds a ``"rate_limit"`` fault asks the client to wait.
        latency: seconds a ``"latency"`` fault waits.
        times: how many requests it affects (``None``: all, until removed).
        probability: chance that a matching request is affected.
        secondary: for GitHub ``"rate_limit"``: a secondary limit (429 + ``Retry-After``)
            instead of an exhausted primary budget (403, remaining 0).
    """

    kind: FaultKind
    platform: str | None = None
    method: str | None = None
    path: str | None = None
    status: int = 503
    retry_after: float = 1.0
    latency: float = 0.0
    times: int | None = 1
    probability: float = 1.0
    secondary: bool = False
    fired: int = field(default=0, init=False)

    def matches(self, platform: str, method: str, path: str) -> bool:
        """Whether this fault applies to the request."""
        if self.times is not None and self.fired >= self.times:
            return False
        if self.platform is not None and self.platform != platform:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or path.startswith(self.path)


class FaultInjector:
    """The sandbox's list of active faults (thread-safe: tests may add them from another
    thread while uvicorn serves)."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        """Activate ``fault``; returns it (its ``fired`` count shows how often it fired)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Deactivate ``fault``."""
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        """Deactivate every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def active(self) -> list[Fault]:
        """The faults that may still fire."""
        with self._lock:
            return [f for f in self._faults if f.times is None or f.fired < f.times]

    def take(self, platform: str, method: str, path: str) -> list[Fault]:
        """The faults firing for this request (each counted as fired)."""
        fired: list[Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.matches(platform, method, path) and (
                    fault.probability >= 1 or self._rng.random() < fault.probability
                ):
                    fault.fired += 1
                    fired.append(fault)
        return fired
