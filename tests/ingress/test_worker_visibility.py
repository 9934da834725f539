"""Live workers in ``app.health()``, ``/readyz?verbose=1`` and ``/metrics`` (issue 9, §1)."""

from __future__ import annotations

from pathlib import Path

import httpx

from contexten import App, Event, HandlerContext
from contexten.ingress import create_ingress_app
from contexten.observability.app_metrics import instrument_app
from contexten.observability.metrics import Metrics

from ._support import AUTH, make_config

OTHER = "elsewhere.example/4242/beef"


async def test_workers_partitions_and_lag_are_visible(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'w.db'}")
    handled: list[str] = []

    @app.on("order.placed", name="ship")
    async def ship(event: Event, ctx: HandlerContext) -> None:
        handled.append(event.id)

    metrics = Metrics()
    instrument_app(metrics, app.health)
    web = create_ingress_app(app.store, make_config(), readiness=app.health, metrics=metrics)
    async with app:
        await app.publish(Event(type="order.placed", subject="o-1"))
        await app.drain()
        # another process on another host, registered in the same store, holding nothing
        await app.store.heartbeat(OTHER, ttl=60.0, groups=["sub:ship"], meta="pid 4242 worker")
        report = await app.health()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web), base_url="http://localhost", headers=AUTH
        ) as client:
            details = (await client.get("/readyz", params={"verbose": "1"})).json()["details"]
            public = (await client.get("/readyz")).json()
            scraped = (await client.get("/metrics")).text
    assert handled

    assert report.workers is not None
    me = {w.worker.worker_id: w for w in report.workers.workers}
    assert set(me) == {app.dispatcher.worker_id, OTHER}
    [sub] = report.subscriptions
    assert sub.partitions == sub.partition_count > 0  # alone, this process holds them all
    assert len(me[app.dispatcher.worker_id].partitions["sub:ship"]) == sub.partitions
    assert me[OTHER].partitions == {}

    assert public == {"status": "ready"}  # no worker names without verbose
    assert details["worker_id"] == app.dispatcher.worker_id
    rows = {w["worker_id"]: w for w in details["workers"]}
    mine = rows[app.dispatcher.worker_id]
    assert mine["host"] == app.dispatcher.worker_id.split("/")[0]
    assert 0 <= mine["heartbeat_age"] < 60
    assert mine["partitions"] == {"sub:ship": sub.partitions}
    assert rows[OTHER]["host"] == "elsewhere.example"
    assert rows[OTHER]["partitions"] == {}
    [group] = details["partitioned_subscriptions"]
    assert group["subscription"] == "ship"
    assert group["lag"] == 0

    assert "contexten_workers_alive 2.0" in scraped
    assert f'contexten_partitions_owned{{subscription="ship"}} {float(sub.partitions)}' in scraped
    assert 'contexten_subscription_lag{subscription="ship"} 0.0' in scraped


async def test_lag_counts_what_no_live_worker_has_done(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'w.db'}", dispatch=False)
    metrics = Metrics()
    collector = instrument_app(metrics, app.health)
    async with app:
        await app.store.heartbeat(OTHER, ttl=60.0, groups=["sub:ship"], meta="pid 4242 worker")
        await app.store.ensure_partitions("sub:ship", 4, position=0)
        for n in range(3):
            await app.publish(Event(type="order.placed", subject=f"o-{n}"))
        await collector.refresh()
        report = await app.health()
    registry = metrics.registry
    assert registry.get_sample_value("contexten_workers_alive") == 1.0  # no dispatch: not one
    assert registry.get_sample_value("contexten_subscription_lag", {"subscription": "ship"}) == (
        report.store.head
    )
    assert report.workers is not None
    assert [g.lag for g in report.workers.groups] == [report.store.head]
    assert report.store.head is not None
    assert report.store.head >= 3
    assert report.subscriptions == ()  # this process owns nothing
    assert registry.get_sample_value("contexten_partitions_owned", {"subscription": "ship"}) is None
