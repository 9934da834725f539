"""Load shedding: when too many requests already wait on the store's write path, more are
answered 429 with Retry-After at once, store nothing, and the server recovers when the store
catches up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

from contexten.exceptions import ConfigurationError, Overloaded
from contexten.ingress import IngressConfig, create_ingress_app
from contexten.store.base import Append, AppendResult
from contexten.store.memory import MemoryEventStore

from ._support import AUTH, HANG_GUARD, github_request, make_config, pull_request_payload


class SlowStore(MemoryEventStore):
    """An in-memory store whose commits wait until the test lets them through (a store that
    has fallen behind: its write path is saturated)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self._arrived = asyncio.Condition()

    async def until_waiting(self, count: int) -> None:
        """Return once ``count`` commits wait at the gate."""
        async with asyncio.timeout(HANG_GUARD), self._arrived:
            await self._arrived.wait_for(lambda: self.waiting >= count)

    async def commit(
        self,
        appends: Sequence[Append],
        *,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
    ) -> list[AppendResult]:
        async with self._arrived:
            self.waiting += 1
            self._arrived.notify_all()
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().commit(appends, dedup_key=dedup_key, checkpoint=checkpoint)


async def test_requests_past_the_limit_are_shed_with_retry_after() -> None:
    store = SlowStore()
    async with store:
        app = create_ingress_app(store, make_config(max_pending_commits=3, retry_after=7))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=AUTH
        ) as client:

            async def post(number: int) -> httpx.Response:
                body, headers = github_request(pull_request_payload(number))
                return await client.post("/webhooks/github", content=body, headers=headers)

            waiting = [asyncio.create_task(post(n)) for n in range(3)]
            await store.until_waiting(3)

            shed = await asyncio.gather(*(post(n) for n in range(10, 15)))
            assert {r.status_code for r in shed} == {429}
            assert all(r.headers["retry-after"] == "7" for r in shed)
            assert shed[0].json()["error"] == "overloaded, retry later"
            assert await store.head() == 0  # nothing shed was stored (nothing at all yet)

            store.gate.set()
            assert [r.status_code for r in await asyncio.gather(*waiting)] == [202] * 3
            recovered = await post(20)  # the backlog is gone: accepted again
            assert recovered.status_code == 202
            metrics = (await client.get("/metrics")).text
        assert await store.head() == 4
    assert 'contexten_webhooks_total{outcome="shed",platform="github"} 5.0' in metrics
    assert 'route="/webhooks/github",status="429"} 5.0' in metrics


async def test_shedding_comes_before_reading_and_verifying_the_body() -> None:
    """Over the limit, a request is refused before its body is read or verified (shedding
    must cost nothing); once the backlog clears, a forged request is 401 as always."""
    store = SlowStore()
    async with store:
        config = make_config(max_pending_commits=1)
        app = create_ingress_app(store, config)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=AUTH
        ) as client:
            body, headers = github_request(pull_request_payload(1))
            first = asyncio.create_task(
                client.post("/webhooks/github", content=body, headers=headers)
            )
            await store.until_waiting(1)
            forged = dict(headers, **{"X-Hub-Signature-256": "sha256=" + "0" * 64})
            refused = await client.post("/webhooks/github", content=body, headers=forged)
            assert refused.status_code == 429
            store.gate.set()
            assert (await first).status_code == 202
            after = await client.post("/webhooks/github", content=body, headers=forged)
            assert after.status_code == 401


def test_the_limit_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_pending_commits"):
        IngressConfig(max_pending_commits=0)
    with pytest.raises(ConfigurationError, match="retry_after"):
        IngressConfig(retry_after=-1)
    assert Overloaded.status_code == 429
