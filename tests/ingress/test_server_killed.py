"""kill -9 during a flood: every webhook that got a 2xx is stored exactly once after the
restart, and resending the ones that got no answer stores each of them once too."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from contexten.cli.simulate import SignedRequest, github_request, send
from contexten.store import create_store

from ._serving import ServeProcess
from ._support import GITHUB_SECRET, HANG_GUARD, pull_request_payload

FLOOD = 2000
CONCURRENCY = 50
KILL_AFTER = 600  # acknowledged deliveries before the kill


async def _flood(
    url: str, requests: list[SignedRequest], on_ack: Callable[[int], None] | None = None
) -> tuple[set[str], list[SignedRequest]]:
    """Post ``requests`` from CONCURRENCY workers; return the delivery ids that got a 2xx and
    the requests that did not (no answer, or an error status)."""
    queue: asyncio.Queue[SignedRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    acked: set[str] = set()
    unacked: list[SignedRequest] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    timeout = httpx.Timeout(HANG_GUARD, connect=5.0)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                try:
                    response = await send(client, url, request)
                except httpx.TransportError:
                    unacked.append(request)
                    continue
                if response.is_success:
                    assert request.delivery is not None
                    acked.add(request.delivery)
                    if on_ack is not None:
                        on_ack(len(acked))
                else:
                    assert response.status_code in (429, 503), response.text
                    unacked.append(request)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return acked, unacked


async def _deliveries(db: Path) -> Counter[str | None]:
    async with create_store(f"sqlite:///{db}") as store:
        counts: Counter[str | None] = Counter()
        after = 0
        while batch := await store.read_all(after=after, limit=1000):
            counts.update(
                rec.event.delivery_id for rec in batch if not rec.stream.startswith("$")
            )  # webhooks; not the first start's admin token
            after = batch[-1].position
        return counts


@pytest.mark.slow
async def test_kill_9_mid_flood_loses_and_duplicates_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "flood.db"
    env = {"CONTEXTEN_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    args = ["--store", f"sqlite:///{db}"]
    requests = [
        github_request("pull_request.opened", pull_request_payload(n), secret=GITHUB_SECRET)
        for n in range(FLOOD)
    ]

    first = ServeProcess(tmp_path, args, env)
    try:
        url = await first.wait_ready()

        def kill_when_enough(count: int) -> None:
            if count == KILL_AFTER:
                first.kill()

        acked, unacked = await _flood(url, requests, kill_when_enough)
        assert await first.wait_exit() == -9
    finally:
        first.close()
    assert len(acked) >= KILL_AFTER
    assert unacked, "the kill came after the flood: nothing was tested"
    assert len(acked) + len(unacked) == FLOOD

    second = ServeProcess(tmp_path, args, env)
    try:
        url = await second.wait_ready()
        stored = await _deliveries(db)
        assert all(stored[d] == 1 for d in acked), "an acknowledged delivery is lost or doubled"
        assert max(stored.values()) == 1
        # Some unacknowledged ones may have been committed before the kill: resending them
        # answers 200 (duplicate) and stores nothing more.
        assert len(stored) >= len(acked)

        reacked, still = await _flood(url, unacked)
        assert not still
        assert reacked == {r.delivery for r in unacked}
        second.terminate()
        assert await second.wait_exit() == 0, second.log()
    finally:
        second.close()

    stored = await _deliveries(db)
    assert set(stored) == {r.delivery for r in requests}
    assert set(stored.values()) == {1}
