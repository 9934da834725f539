"""The ``/api/v1`` read-model routes of a served App: answers, pages, roles and audit.

Every read-model route is checked against every credential (none, viewer, operator): reads
need ``viewer``, actions ``operator``; the table below is written independently of the
API's own, and a route added without a line here fails the matrix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from contexten import App, Event, Workflow
from contexten.clock import WallClock
from contexten.ingress.server import create_server
from contexten.resilience import RetryPolicy
from contexten.security import AUDIT_STREAM_PREFIX, Role, create_token
from contexten.workflows.history import stream_name

from ._support import HANG_GUARD, make_config

READS = [
    "/api/v1/workflows",
    "/api/v1/workflows/{wf}",
    "/api/v1/workflow-versions",
    "/api/v1/dead-letters",
    "/api/v1/dead-letters/counts",
    "/api/v1/dead-letters/{letter}",
    "/api/v1/work-items",
    "/api/v1/work-items/ENG-1",
    "/api/v1/projections",
    "/api/v1/platforms",
    "/api/v1/schedules",
]
BODIES: dict[str, Any] = {
    "/api/v1/workflows/{wf}/migrate": {"to_version": 1, "dry_run": True},
    "/api/v1/workflows/{wf}/fork": {"cancel_old": False},
}
"""A valid body for the actions that take one (a denied request never gets to read it)."""
ACTIONS = [
    "/api/v1/workflows/{wf}/cancel",
    "/api/v1/workflows/{wf}/redrive",
    "/api/v1/workflows/{wf}/migrate",
    "/api/v1/workflows/{wf}/fork",
    "/api/v1/dead-letters/{letter}/redrive",
    "/api/v1/dead-letters/{letter}/discard",
    "/api/v1/dead-letters/redrive",
    "/api/v1/dead-letters/discard",
    "/api/v1/schedules/{sched}/pause",
    "/api/v1/schedules/{sched}/resume",
    "/api/v1/schedules/{sched}/trigger",
    "/api/v1/schedules/{sched}/backfill",
]


async def _fail(n: int) -> int:
    raise ValueError(f"step {n} broke")


class Served:
    def __init__(
        self, app: App, asgi: Starlette, client: httpx.AsyncClient, tokens: dict[str, str]
    ) -> None:
        self.app = app
        self.asgi = asgi
        self.client = client
        self.tokens = tokens

    async def get(self, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self._auth(role))

    async def post(
        self, path: str, role: str = "operator", body: Any = None, **params: Any
    ) -> httpx.Response:
        return await self.client.post(path, params=params, json=body, headers=self._auth(role))

    def _auth(self, role: str) -> dict[str, str]:
        token = self.tokens.get(role)
        return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    app = App(f"sqlite:///{tmp_path / 'api.db'}", clock=WallClock())

    @app.on("chores.*", name="fragile", retry=RetryPolicy(maximum_attempts=1))
    async def fragile(event: Event, ctx: object) -> None:
        raise ValueError("cannot do chores")

    @app.workflow("ship", on="linear.issue.created", key=lambda e: e.correlation_id)
    async def ship(wf: Workflow, event: Event) -> int:
        return int(await wf.step(_fail, 1, retry=RetryPolicy(maximum_attempts=1)))

    @app.workflow("idle", on="linear.issue.updated", version=2)
    async def idle(wf: Workflow, event: Event) -> None:
        await wf.sleep(timedelta(days=1))

    @app.schedule("nightly", cron="0 2 * * *", catch_up="none")
    async def nightly(wf: Workflow, _: object) -> None:
        return None

    asgi = create_server(app, make_config(auth_failure_limit=1000))
    await app.start()
    try:
        tokens = {
            role.name.lower(): (await create_token(app.store, name=f"t-{role}", role=role)).token
            for role in (Role.VIEWER, Role.OPERATOR)
        }
        for i in range(3):
            await app.publish(Event(type="chores.due", source="t", subject=f"c{i}"))
        await app.publish(
            Event(type="linear.issue.created", source="linear", correlation_id="ENG-1")
        )
        await app.publish(Event(type="linear.issue.updated", source="linear", subject="x"))
        await app.drain(HANG_GUARD)
        for _ in range(3000):
            if (
                await app.list_workflows("failed")
                and await app.list_workflows("sleeping")
                and await app.store.read_stream("$schedule-nightly")
            ):
                break
            await app.drain(HANG_GUARD)
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield Served(app, asgi, client, tokens)
    finally:
        await app.stop()


async def _ids(served: Served) -> dict[str, str]:
    letters = (await served.get("/api/v1/dead-letters")).json()["items"]
    return {"wf": "ship:ENG-1", "letter": letters[0]["id"], "sched": "nightly"}


async def test_every_route_asks_the_permission_check(served: Served) -> None:
    ids = await _ids(served)
    for template in READS:
        path = template.format(**ids)
        assert (await served.get(path, role="none")).status_code == 401, path
        assert (await served.get(path, role="viewer")).status_code == 200, path
        assert (await served.get(path, role="operator")).status_code == 200, path
    for template in ACTIONS:
        path, body = template.format(**ids), BODIES.get(template)
        assert (await served.post(path, role="none", body=body)).status_code == 401, path
        assert (await served.post(path, role="viewer", body=body)).status_code == 403, path
    # An operator's request gets through to the route: ship:ENG-1 failed, it is not blocked.
    migrate = await served.post("/api/v1/workflows/ship:ENG-1/migrate", body={"to_version": 1})
    assert migrate.status_code == 409, migrate.text
    assert "not blocked" in migrate.json()["detail"]
    served_paths = {
        route.path
        for route in served.asgi.routes
        if isinstance(route, Route)
        and route.path.startswith("/api/v1/")
        and not route.path.startswith("/api/v1/events")
    }
    listed = {
        t.replace("{wf}", "{id}")
        .replace("{letter}", "{id}")
        .replace("{sched}", "{id}")
        .replace("ENG-1", "{id}")
        for t in READS + ACTIONS
    }
    assert served_paths == listed


async def test_lists_pages_and_items(served: Served) -> None:
    workflows = (await served.get("/api/v1/workflows", status="failed")).json()
    assert [w["workflow_id"] for w in workflows["items"]] == ["ship:ENG-1"]
    assert "step 1 broke" in workflows["items"][0]["error"]["message"]
    assert workflows["items"][0]["version"] == "1"
    versions = (await served.get("/api/v1/workflow-versions")).json()["items"]
    # Only the sleeping instance is in flight (a failed one has ended).
    assert versions == [{"name": "idle", "version": "2", "in_flight": 1, "blocked": 0}]
    assert workflows["next_cursor"] is None
    one = (await served.get("/api/v1/workflows/ship:ENG-1")).json()
    assert one["status"] == "failed"
    assert any(h["type"] == "step_failed" for h in one["history"])
    first = (await served.get("/api/v1/dead-letters", limit=2)).json()
    assert len(first["items"]) == 2
    rest = (await served.get("/api/v1/dead-letters", cursor=first["next_cursor"])).json()
    assert len(rest["items"]) == 1
    counts = (await served.get("/api/v1/dead-letters/counts")).json()
    assert counts == {"open": 3, "by_subscription": {"fragile": {"parked": 3}}}
    item = (await served.get("/api/v1/work-items/ENG-1")).json()
    assert item["work_item"]["correlation_id"] == "ENG-1"
    assert item["timeline"][0]["type"] == "linear.issue.created"
    found = (await served.get("/api/v1/work-items", prefix="ENG")).json()["items"]
    assert [w["correlation_id"] for w in found] == ["ENG-1"]
    projections = (await served.get("/api/v1/projections")).json()["items"]
    assert {p["name"] for p in projections} >= {"workflows", "dead_letters"}
    assert (await served.get("/api/v1/workflows/nope")).status_code == 404
    assert (await served.get("/api/v1/work-items/nope")).status_code == 404
    bad = await served.get("/api/v1/workflows", status="sideways")
    assert bad.status_code == 400
    assert (await served.get("/api/v1/workflows", cursor="!!")).status_code == 400
    assert (await served.get("/api/v1/dead-letters", limit=0)).status_code == 400


async def test_operator_actions_act_once_and_are_audited(served: Served) -> None:
    ids = await _ids(served)
    letter = ids["letter"]
    redriven = await served.post(f"/api/v1/dead-letters/{letter}/redrive")
    assert redriven.status_code == 200
    again = await served.post(f"/api/v1/dead-letters/{letter}/redrive")
    assert again.status_code == 409
    # The redriven event fails again (its handler always does) and is parked anew: let that
    # happen before the bulk discard, so what it matches does not depend on timing.
    await served.app.drain(timeout=30)
    bulk = (await served.post("/api/v1/dead-letters/discard", subscription="fragile")).json()
    assert bulk == {"matched": 3, "done": 3}
    assert (await served.post("/api/v1/dead-letters/nope/discard")).status_code == 404
    redrive_wf = await served.post("/api/v1/workflows/ship:ENG-1/redrive")
    assert redrive_wf.status_code == 202
    records = await served.app.store.read_all(limit=10_000)
    audits = [r.event for r in records if r.stream.startswith(AUDIT_STREAM_PREFIX)]
    actions = [(e.type, e.data["outcome"], e.data.get("target")) for e in audits]
    assert ("contexten.audit.dlq.redrive", "done", letter) in actions
    assert ("contexten.audit.dlq.redrive", "unchanged", letter) in actions
    assert ("contexten.audit.dlq.discard", "done", "fragile") in actions
    assert ("contexten.audit.workflows.redrive", "done", "ship:ENG-1") in actions
    for event in audits:
        assert event.data["principal"]["role"] in ("operator", "viewer")
        assert served.tokens["operator"] not in str(event.data)


async def test_schedules_are_listed_paused_triggered_backfilled_and_audited(
    served: Served,
) -> None:
    listed = (await served.get("/api/v1/schedules")).json()
    assert [s["name"] for s in listed["items"]] == ["nightly"]
    assert listed["items"][0]["paused"] is False
    assert listed["truncated"] is False
    paused = await served.post("/api/v1/schedules/nightly/pause")
    assert paused.status_code == 202
    assert (await served.get("/api/v1/schedules")).json()["items"][0]["paused"] is True
    assert (await served.post("/api/v1/schedules/nightly/resume")).status_code == 202
    assert (await served.get("/api/v1/schedules")).json()["items"][0]["paused"] is False
    triggered = (await served.post("/api/v1/schedules/nightly/trigger")).json()
    assert triggered["run"].startswith("sched:nightly:manual:")
    window = {"from": "2026-01-01T00:00:00+00:00", "to": "2026-01-03T00:00:00+00:00"}
    backfill = await served.post("/api/v1/schedules/nightly/backfill", **window)
    assert backfill.status_code == 202, backfill.text
    # Bad input stores nothing: no from, from after to, an unknown schedule.
    before = await served.app.store.read_stream("$schedule-nightly")
    assert (await served.post("/api/v1/schedules/nightly/backfill")).status_code == 400
    reversed_ = {"from": window["to"], "to": window["from"]}
    assert (await served.post("/api/v1/schedules/nightly/backfill", **reversed_)).status_code == 400
    assert (await served.post("/api/v1/schedules/nope/pause")).status_code == 404
    assert (await served.post("/api/v1/schedules/nope/trigger")).status_code == 404
    assert await served.app.store.read_stream("$schedule-nightly") == before
    assert not await served.app.store.read_stream("$schedule-nope")
    records = await served.app.store.read_all(limit=10_000)
    audits = [r.event for r in records if r.stream.startswith(AUDIT_STREAM_PREFIX)]
    actions = [(e.type, e.data["outcome"], e.data.get("target")) for e in audits]
    for verb in ("pause", "resume", "trigger", "backfill"):
        assert (f"contexten.audit.schedules.{verb}", "requested", "nightly") in actions
    # The refused requests are audited by the middleware (their status) but requested nothing.
    assert len([a for a in actions if a[1] == "requested"]) == 4


async def test_as_of_shows_a_workflow_and_a_work_item_as_they_were(served: Served) -> None:
    history = await served.app.store.read_stream(stream_name("ship:ENG-1"))
    started = history[0].recorded_at
    now = (await served.get("/api/v1/workflows/ship:ENG-1")).json()
    assert now["status"] == "failed"
    then = (await served.get("/api/v1/workflows/ship:ENG-1", as_of=started.isoformat())).json()
    assert then["status"] != "failed"
    assert len(then["history"]) < len(now["history"])
    long_ago = (started - timedelta(days=1)).isoformat()
    assert (await served.get("/api/v1/workflows/ship:ENG-1", as_of=long_ago)).status_code == 404
    assert (await served.get("/api/v1/work-items/ENG-1", as_of=long_ago)).status_code == 404
    timeline = (await served.get("/api/v1/work-items/ENG-1")).json()["timeline"]
    first = timeline[0]["recorded_at"]
    early = (await served.get("/api/v1/work-items/ENG-1", as_of=first)).json()["timeline"]
    assert [e["position"] for e in early] == [
        e["position"] for e in timeline if e["recorded_at"] <= first
    ]
    assert len(early) < len(timeline)
    assert (await served.get("/api/v1/work-items/ENG-1", as_of="yesterday")).status_code == 400
