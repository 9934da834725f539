"""The served App: webhooks over real HTTP into the App's store and on to its handlers;
readiness from the App's health; the dispatcher's metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contexten import App, Event, HandlerContext, RetryPolicy
from contexten.cli.simulate import github_request, send
from contexten.clock import WallClock
from contexten.exceptions import StoreUnavailable
from contexten.ingress.server import IngressServer, create_server

from ._serving import serving
from ._support import AUTH, GITHUB_SECRET, HANG_GUARD, make_config, pull_request_payload


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    app = App(f"sqlite:///{tmp_path / 'served.db'}", shutdown_grace=1.0)
    yield app
    await app.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_webhook_is_answered_before_its_slow_handler_finishes(app: App) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[Event] = []

    @app.on("github.pull_request.opened", name="slow")
    async def slow(event: Event, ctx: HandlerContext) -> None:
        started.set()
        await release.wait()
        seen.append(event)

    request = github_request("pull_request.opened", pull_request_payload(3), secret=GITHUB_SECRET)
    async with (
        serving(app, make_config(clock=WallClock())) as (_, url),
        httpx.AsyncClient(timeout=HANG_GUARD) as client,
    ):
        response = await send(client, url, request)
        # The handler is blocked until we release it: the answer did not wait for it.
        assert response.status_code == 202, response.text
        assert not release.is_set()
        async with asyncio.timeout(HANG_GUARD):
            await started.wait()
        release.set()
        await app.drain(HANG_GUARD)
        assert [e.delivery_id for e in seen] == [request.delivery]
        assert seen[0].type == "github.pull_request.opened"
        assert seen[0].subject == "octo/repo#3"

        again = await send(client, url, request)  # GitHub redelivers the same delivery
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate"}
        await app.drain(HANG_GUARD)
    assert len(seen) == 1


async def test_readiness_follows_the_app(app: App) -> None:
    asgi = create_server(app, make_config())
    transport = httpx.ASGITransport(app=asgi)  # no lifespan: we start and stop the app
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=AUTH
    ) as client:
        before = await client.get("/readyz", params={"verbose": "1"})
        assert before.status_code == 503
        assert before.json()["details"]["running"] is False
        assert (await client.get("/healthz")).status_code == 200

        await app.start()
        ready = await client.get("/readyz", params={"verbose": "1"})
        assert ready.status_code == 200, ready.text
        assert ready.json()["details"]["store"]["reachable"] is True

        await app.stop()
        after = await client.get("/readyz")
        assert after.status_code == 503
        assert (await client.get("/healthz")).status_code == 200


async def test_readiness_fails_when_the_store_is_closed_under_the_app(app: App) -> None:
    asgi = create_server(app, make_config())
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=AUTH
    ) as client:
        await app.start()
        assert (await client.get("/readyz")).status_code == 200
        await app.store.close()
        gone = await client.get("/readyz", params={"verbose": "1"})
        assert gone.status_code == 503
        assert gone.json()["details"]["store"]["reachable"] is False
        metrics = _samples((await client.get("/metrics")).text)
        assert metrics[("contexten_store_up", ())] == 0.0
        assert metrics[("contexten_up", ())] == 0.0


async def test_metrics_carry_the_dispatcher_gauges(app: App) -> None:
    handled = asyncio.Event()

    @app.on("github.pull_request.opened", name="fine")
    async def fine(event: Event, ctx: HandlerContext) -> None:
        handled.set()

    @app.on(
        "github.pull_request.opened",
        name="broken",
        retry=RetryPolicy(maximum_attempts=2, initial_interval=0.01, jitter=0),
    )
    async def broken(event: Event, ctx: HandlerContext) -> None:
        raise RuntimeError("always")

    async with (
        serving(app, make_config()) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=HANG_GUARD, headers=AUTH) as client,
    ):
        for number in (1, 2):
            request = github_request(
                "pull_request.opened", pull_request_payload(number), secret=GITHUB_SECRET
            )
            assert (await send(client, url, request)).status_code == 202
        await app.drain(HANG_GUARD)
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        metrics = _samples(scrape.text)

    fine_label = (("subscription", "fine"),)
    broken_label = (("subscription", "broken"),)
    assert metrics[("contexten_up", ())] == 1.0
    assert metrics[("contexten_store_up", ())] == 1.0
    assert metrics[("contexten_store_head", ())] >= 2  # two events, plus dead letters
    assert metrics[("contexten_dispatcher_lag", fine_label)] == 0.0
    assert metrics[("contexten_dispatcher_lag", broken_label)] == 0.0
    assert metrics[("contexten_dispatcher_pending", fine_label)] == 0.0
    assert metrics[("contexten_subscription_running", fine_label)] == 1.0
    assert metrics[("contexten_handler_deliveries_total", fine_label)] == 2.0
    assert metrics[("contexten_handler_failed_attempts_total", broken_label)] == 4.0
    assert metrics[("contexten_handler_parked_total", broken_label)] == 2.0
    assert metrics[("contexten_dead_letters", ())] == 2.0
    assert metrics[("contexten_webhooks_total", (("outcome", "stored"), ("platform", "github")))]
    assert (
        metrics[
            (
                "contexten_http_requests_total",
                (("method", "POST"), ("route", "/webhooks/github"), ("status", "202")),
            )
        ]
        == 2.0
    )
    assert any(name == "contexten_ingest_latency_seconds_count" for name, _ in metrics)
    # Every handler attempt is timed: two deliveries for "fine", two attempts each for "broken".
    assert metrics[("contexten_handler_duration_seconds_count", fine_label)] == 2.0
    assert metrics[("contexten_handler_duration_seconds_count", broken_label)] == 4.0
    inf = (("le", "+Inf"), ("subscription", "fine"))
    assert metrics[("contexten_handler_duration_seconds_bucket", inf)] == 2.0
    assert metrics[("contexten_handler_duration_seconds_sum", fine_label)] >= 0.0
    assert handled.is_set()


async def test_a_bare_app_serves_the_ingress_and_api(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'bare.db'}")
    request = github_request(
        "push", {"ref": "refs/heads/main", "repository": {"full_name": "o/r"}}, secret=GITHUB_SECRET
    )
    async with (
        serving(app, make_config()) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=HANG_GUARD, headers=AUTH) as client,
    ):
        assert (await send(client, url, request)).status_code == 202
        listed = await client.get("/api/v1/events", params={"type": "github.**"})
        assert listed.status_code == 200
        assert [e["event"]["delivery_id"] for e in listed.json()["events"]] == [request.delivery]
        assert (await client.get("/readyz")).status_code == 200
    assert not app.running


async def test_a_failed_start_is_raised_not_exited(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    server = IngressServer(app, port=0, config=make_config())
    with pytest.raises(StoreUnavailable, match="does not exist"):
        async with asyncio.timeout(HANG_GUARD):
            await server.serve()
    assert not server.started


async def test_an_address_in_use_is_raised_not_exited(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = App(f"sqlite:///{tmp_path / 'taken.db'}")
        server = IngressServer(app, port=taken.getsockname()[1], config=make_config())
        with pytest.raises(RuntimeError, match="did not start"):
            async with asyncio.timeout(HANG_GUARD):
                await server.serve()
    assert not app.running  # started for the lifespan, stopped when listening failed
