"""Unsigned bodies cost little: no signature header, nothing is read; a wrong signature is
found before any JSON parsing; many large unsigned bodies at once share one memory budget,
so twelve 24 MB bodies do not raise the server's memory by more than about twice the cap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contexten.cli.simulate import github_request as signed_github_request
from contexten.ingress import create_ingress_app
from contexten.ingress.body import ByteBudget, MiB
from contexten.store.memory import MemoryEventStore

from ._serving import ServeProcess
from ._support import (
    GITHUB_SECRET,
    HANG_GUARD,
    github_request,
    make_config,
    pull_request_payload,
    unverified_signature,
)

CAP = 25 * MiB  # GitHub's cap, the default


async def _post(app_store: MemoryEventStore, body: bytes, headers: dict[str, str]) -> int:
    app = create_ingress_app(app_store, make_config())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x"
    ) as client:
        return (await client.post("/webhooks/github", content=body, headers=headers)).status_code


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}", b"\xff\xfe"],
    ids=["not-json", "nested-bomb", "not-utf8"],
)
async def test_the_signature_is_checked_before_the_json_is_parsed(body: bytes) -> None:
    async with MemoryEventStore() as store:
        _, headers = github_request(body=body)
        assert await _post(store, body, headers) == 400  # signed: parsed, and malformed
        headers = {**headers, **unverified_signature("github")}
        assert await _post(store, body, headers) == 401  # unsigned: never parsed
        del headers["X-Hub-Signature-256"]
        assert await _post(store, body, headers) == 401
        assert await store.read_all() == []


async def test_a_large_body_that_gets_no_share_before_the_deadline_is_shed_429() -> None:
    config = make_config(
        offload_threshold=1024, large_body_budget=4096, github_deadline=1.3, deadline_margin=1.0
    )
    body, headers = github_request(body=b'{"pad": "' + b"x" * 3000 + b'"}')
    release = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:100]
        await release.wait()
        yield body[100:]

    async with MemoryEventStore() as store:
        app = create_ingress_app(store, config)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            slow_headers = {**headers, "Content-Length": str(len(body))}
            holder = asyncio.create_task(
                client.post("/webhooks/github", content=slowly(), headers=slow_headers)
            )
            await asyncio.sleep(0.05)  # it holds most of the budget while its body trickles
            shed = await client.post("/webhooks/github", content=body, headers=headers)
            assert shed.status_code == 429
            assert shed.headers["Retry-After"] == "1"
            release.set()
            async with asyncio.timeout(HANG_GUARD):
                assert (await holder).status_code == 202
        # Once the budget is free again, large bodies are read as usual.
        again = await _post_to(app, body, headers)
        assert again == 200  # the same delivery: a duplicate


async def _post_to(app: Any, body: bytes, headers: dict[str, str]) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        return (await client.post("/webhooks/github", content=body, headers=headers)).status_code


async def test_the_budget_grants_in_order_and_a_share_is_cut_to_the_total() -> None:
    budget = ByteBudget(100)
    order: list[str] = []
    first = budget.hold(60)
    await first.__aenter__()

    async def take(name: str, size: int) -> None:
        async with budget.hold(size):
            order.append(name)
            await asyncio.sleep(0.01)

    waiting = [asyncio.create_task(take("big", 500)), asyncio.create_task(take("small", 10))]
    await asyncio.sleep(0.01)
    assert order == []  # "small" would fit, but waits behind "big": first come, first served
    await first.__aexit__(None, None, None)
    async with asyncio.timeout(HANG_GUARD):
        await asyncio.gather(*waiting)
    assert order == ["big", "small"]
    assert budget.available == 100


async def test_a_waiter_that_gives_up_frees_its_place() -> None:
    budget = ByteBudget(10)
    async with budget.hold(10):
        stuck = asyncio.create_task(_hold(budget, 10))
        behind = asyncio.create_task(_hold(budget, 1))
        await asyncio.sleep(0.01)
        stuck.cancel()
        await asyncio.sleep(0)
    async with asyncio.timeout(HANG_GUARD):
        await behind
    with contextlib.suppress(asyncio.CancelledError):
        await stuck
    assert budget.available == 10


async def _hold(budget: ByteBudget, size: int) -> None:
    async with budget.hold(size):
        await asyncio.sleep(0)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
async def test_twelve_unsigned_24_mb_bodies_at_once_stay_within_twice_the_cap(
    tmp_path: Path,
) -> None:
    env = {"CONTEXTEN_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    # --no-dispatch: this measures what the ingress holds for the bodies; a dispatching
    # process would also warm up its handlers and read models during the measurement.
    store = f"sqlite:///{tmp_path / 's.db'}"
    serve = ServeProcess(tmp_path, ["--store", store, "--no-dispatch"], env)
    try:
        url = await serve.wait_ready()
        async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
            request = signed_github_request(
                "pull_request.opened", pull_request_payload(1), secret=GITHUB_SECRET
            )
            warm = await client.post(
                f"{url}/webhooks/github", content=request.body, headers=request.headers
            )
            assert warm.status_code == 202
            await asyncio.sleep(0.2)
            baseline = _rss(serve.process.pid)
            body = b'{"pad": "' + b"x" * (24 * 1000 * 1000) + b'"}'
            _, headers = github_request(body=b"{}")
            headers |= unverified_signature("github")
            peak = baseline
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, _rss(serve.process.pid))
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            answers = await asyncio.gather(
                *(
                    client.post(f"{url}/webhooks/github", content=body, headers=headers)
                    for _ in range(12)
                )
            )
            done.set()
            await sampler
        assert [a.status_code for a in answers] == [401] * 12
        growth = peak - baseline
        print(f"RSS: baseline {baseline / MiB:.1f} MiB, peak +{growth / MiB:.1f} MiB")
        # One body at a time is held (the budget), but twice while it is read: the read
        # buffer and its ``bytes`` copy. Measured 1.9-2.6x the cap across runs (the
        # allocator does not always return the freed copy at once); without the budget it
        # is 12 bodies, over 20x.
        assert growth <= 2.6 * CAP, f"RSS grew by {growth / MiB:.1f} MiB"
    finally:
        serve.close()
