"""Fixtures for the platform client tests: a sandbox, clients wired into it, a virtual clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from contexten.integrations.client import ClientRegistry
from contexten.integrations.http import HTTPSettings
from contexten.resilience import RetryPolicy
from contexten.resilience.circuit_breaker import BreakerConfig
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox

RECORDINGS = Path(__file__).parent / "recordings"

FAST_RETRY = RetryPolicy(initial_interval=0.1, maximum_interval=1.0, maximum_attempts=4)


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    """A virtual clock that jumps whenever every task waits on it."""
    # Starts at the real time: the sandbox writes real reset timestamps in its headers.
    async with VirtualClock(datetime.now(UTC), auto_advance=True) as clock:
        yield clock


@pytest.fixture
async def recording_clock() -> AsyncIterator[VirtualClock]:
    """A virtual clock at 2030-01-01T00:00:00Z (epoch 1893456000), the time the recordings'
    rate-limit reset headers are written against."""
    async with VirtualClock(auto_advance=True) as clock:
        yield clock


@pytest.fixture
def sandbox() -> Sandbox:
    """A fresh sandbox (not started: agent runs move only when a test says so)."""
    return Sandbox()


@pytest.fixture
async def clients(sandbox: Sandbox, clock: VirtualClock) -> AsyncIterator[ClientRegistry]:
    """Clients for the four platforms, in-process into the sandbox, on the virtual clock."""
    async with sandbox.clients(
        clock=clock, retry=FAST_RETRY, breaker=BreakerConfig(failure_threshold=5, reset_timeout=30)
    ) as registry:
        yield registry


def load_recording(name: str) -> dict[str, Any]:
    """A recorded response: ``{"status": ..., "headers": {...}, "body": ...}``."""
    recording: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text())
    return recording


def replay(*names: str) -> httpx.MockTransport:
    """A transport answering successive requests with the named recordings (the last repeats)."""
    queue = [load_recording(n) for n in names]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(item["status"], headers=item.get("headers", {}), json=item["body"])

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


def settings(base_url: str, **overrides: Any) -> HTTPSettings:
    """Client settings with fast retries, for tests."""
    return HTTPSettings(base_url=base_url, token="test-token", retry=FAST_RETRY, **overrides)
