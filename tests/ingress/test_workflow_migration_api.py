"""Migrating and forking workflow instances over HTTP, on a served App (memory, SQLite and
PostgreSQL).

A v1 ``deploy`` instance completes two steps and waits; the App is then restarted with only a
v2 of the workflow, so the instance is ``blocked``. An operator moves it with ``POST
/api/v1/workflows/{id}/migrate`` (or starts a fresh one with ``/fork``): the answer is the
migration plan; a refusal is 409, audited, and records nothing; a dry run records nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contexten import App, Event, Workflow
from contexten.clock import WallClock
from contexten.exceptions import WorkflowNotFound
from contexten.ingress.server import create_server
from contexten.security import AUDIT_STREAM_PREFIX, Role, create_token
from contexten.store import EventStore, create_store
from contexten.workflows.history import stream_name

from ._support import HANG_GUARD, make_config

ran: Counter[str] = Counter()


def effect(tag: str) -> str:
    """A step with an effect outside the instance: counted."""
    ran[tag] += 1
    return tag


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    ran.clear()


def deploy_v1(app: App) -> None:
    @app.workflow("deploy", version=1)
    async def deploy(wf: Workflow, _: Any) -> list[str]:
        one = await wf.step(effect, "one", name="one")
        two = await wf.step(effect, "two", name="two")
        await wf.wait_for("deploy.go")  # call 3: where the instance waits, then is blocked
        return [one, two, await wf.step(effect, "v1-three", name="three")]


def deploy_v2_changes_call_3(app: App) -> None:
    @app.workflow("deploy", version=2)
    async def deploy(wf: Workflow, _: Any) -> list[str]:
        one = await wf.step(effect, "one", name="one")
        two = await wf.step(effect, "two", name="two")
        three = await wf.step(effect, "v2-three", name="three-checked")  # a new call 3
        await wf.wait_for("deploy.go")
        return [one, two, three]


def deploy_v2_changes_call_1(app: App) -> None:
    @app.workflow("deploy", version=2)
    async def deploy(wf: Workflow, _: Any) -> list[str]:
        one = await wf.step(effect, "one-prime", name="one-prime")  # differs at call 1
        await wf.wait_for("deploy.go")
        return [one]


async def until_status(app: App, workflow_id: str, status: str) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            try:
                if (await app.get_workflow(workflow_id)).status == status:
                    return
            except WorkflowNotFound:
                pass
            await asyncio.sleep(0.005)


class Served:
    """App v2 served over HTTP, with a viewer's and an operator's token."""

    def __init__(self, app: App, client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
        self.app = app
        self.client = client
        self.tokens = tokens

    async def post(
        self, path: str, body: Any = None, role: str = "operator", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        if body is not None:
            kwargs["json"] = body
        return await self.client.post(path, headers=headers, **kwargs)

    async def history(self, workflow_id: str = "d1") -> list[tuple[int, str]]:
        records = await self.app.store.read_stream(stream_name(workflow_id))
        return [(r.version, r.event.type) for r in records]

    async def audits(self, action: str) -> list[tuple[str, str | None, str | None]]:
        records = await self.app.store.read_all(limit=100_000)
        return [
            (r.event.data["outcome"], r.event.data.get("target"), r.event.data.get("detail"))
            for r in records
            if r.stream.startswith(AUDIT_STREAM_PREFIX)
            and r.event.type == f"contexten.audit.workflows.{action}"
        ]


Serve = Callable[[Callable[[App], None]], Awaitable[Served]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """The store both Apps share, per backend (PostgreSQL: a throwaway schema)."""
    if request.param != "postgres":
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'mig.db'}"
        async with create_store(url) as opened:
            yield opened
        return
    server: str = request.getfixturevalue("postgres_url")
    asyncpg = pytest.importorskip("asyncpg")
    schema = f"ctx_test_mig_{uuid.uuid4().hex[:12]}"
    try:
        async with create_store(
            f"{server}{'&' if '?' in server else '?'}schema={schema}"
        ) as opened:
            yield opened
    finally:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def serve_blocked(store: EventStore) -> AsyncIterator[Serve]:
    """Run v1 until instance ``d1`` waits, then serve ``register_v2`` only: d1 is blocked."""
    apps: list[App] = []
    clients: list[httpx.AsyncClient] = []

    async def serve(register_v2: Callable[[App], None]) -> Served:
        v1 = App(store, clock=WallClock())
        deploy_v1(v1)
        await v1.start()
        try:
            await v1.start_workflow("deploy", None, workflow_id="d1")
            await until_status(v1, "d1", "waiting")
        finally:
            await v1.stop()
        assert ran == Counter({"one": 1, "two": 1})
        app = App(store, clock=WallClock())
        register_v2(app)
        asgi = create_server(app, make_config(auth_failure_limit=1000))
        await app.start()
        apps.append(app)
        await until_status(app, "d1", "blocked")
        tokens = {
            role.name.lower(): (await create_token(store, name=f"t-{role}", role=role)).token
            for role in (Role.VIEWER, Role.OPERATOR)
        }
        transport = httpx.ASGITransport(app=asgi)
        client = httpx.AsyncClient(transport=transport, base_url="http://localhost")
        clients.append(client)
        return Served(app, client, tokens)

    try:
        yield serve
    finally:
        for client in clients:
            await client.aclose()
        for app in apps:
            await app.stop()


async def test_a_blocked_instance_migrated_through_the_api_resumes(serve_blocked: Serve) -> None:
    served = await serve_blocked(deploy_v2_changes_call_3)

    answer = await served.post("/api/v1/workflows/d1/migrate", {"to_version": 2})
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert (plan["point"], plan["resumes_at"], plan["recorded_calls"]) == (2, 3, 3)
    assert (plan["from_version"], plan["to_version"]) == ("1", "2")
    assert [(c["seq"], c["kind"], c["status"]) for c in plan["superseded"]] == [
        (3, "wait", "in_flight")
    ]
    assert plan["effects"] == [], "a wait did nothing outside the instance"
    assert "three-checked" in plan["divergence"]
    assert plan["migrated"] is True
    assert plan["dry_run"] is False

    await until_status(served.app, "d1", "waiting")  # v2's own wait, after its new call 3
    await served.app.publish(Event(type="deploy.go", source="test"))
    result = await served.app.workflows.get_handle("d1").result(timeout=HANG_GUARD)
    assert result == ["one", "two", "v2-three"]
    assert ran == Counter({"one": 1, "two": 1, "v2-three": 1}), "kept steps never re-ran"
    assert (await served.app.get_workflow("d1")).version == "2"

    assert await served.audits("migrate") == [
        ("done", "d1", "version 1 -> 2, point 2"),  # the route's own record
        ("200", None, None),  # the middleware's record of the operator request
    ]
    again = await served.post("/api/v1/workflows/d1/migrate", {"to_version": 2})
    assert again.status_code == 409
    assert "not blocked" in again.json()["detail"]


async def test_a_refusal_is_409_audited_and_records_nothing_until_forced(
    serve_blocked: Serve,
) -> None:
    served = await serve_blocked(deploy_v2_changes_call_1)
    before = await served.history()

    refused = await served.post("/api/v1/workflows/d1/migrate", {"to_version": "2"})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "conflict"
    assert "was not migrated" in body["detail"]
    assert body["forceable"] is True
    assert body["point"] == 0
    assert [e.split(":")[0] for e in body["effects"]] == [
        "#1 step 'one' (completed)",
        "#2 step 'two' (completed)",
    ]
    assert await served.history() == before, "a refusal records nothing on the instance"
    assert (await served.app.get_workflow("d1")).status == "blocked"
    outcomes = await served.audits("migrate")
    assert [o[:2] for o in outcomes] == [("refused", "d1"), ("409", None)]
    assert "was not migrated" in str(outcomes[0][2])

    preview = await served.post(
        "/api/v1/workflows/d1/migrate", {"to_version": 2, "force": True, "dry_run": True}
    )
    assert preview.status_code == 200, preview.text
    plan = preview.json()
    assert plan["migrated"] is False
    assert plan["dry_run"] is True
    assert plan["point"] == 0
    assert [c["name"] for c in plan["effects"]] == ["one", "two"]
    assert await served.history() == before, "a dry run records nothing, even forced"
    assert [o[0] for o in await served.audits("migrate")] == ["refused", "409", "200"]

    forced = await served.post("/api/v1/workflows/d1/migrate", {"to_version": 2, "force": True})
    assert forced.status_code == 200, forced.text
    assert forced.json()["migrated"] is True
    assert [e for _, e in await served.history()][len(before)] == "contexten.workflow.migrated"
    await until_status(served.app, "d1", "waiting")
    assert ran == Counter({"one": 1, "two": 1, "one-prime": 1})
    (done,) = [o for o in await served.audits("migrate") if o[0] == "done"]
    assert done == ("done", "d1", "version 1 -> 2, point 0, forced over 2 effect(s)")


async def test_bad_bodies_unknown_ids_and_viewers_change_nothing(serve_blocked: Serve) -> None:
    served = await serve_blocked(deploy_v2_changes_call_3)
    before = await served.history()
    url = "/api/v1/workflows/d1/migrate"
    for bad in (
        {},
        {"to_version": None},
        {"to_version": True},
        {"to_version": ""},
        {"to_version": 2, "force": "yes"},
        {"to_version": 2, "sideways": True},
        [2],
    ):
        answer = await served.post(url, bad)
        assert answer.status_code == 400, (bad, answer.text)
    assert (await served.post(url, content=b"{not json")).status_code == 400
    assert (await served.post(url, content=b" " * 5000)).status_code == 400
    unregistered = await served.post(url, {"to_version": 7})
    assert unregistered.status_code == 400
    assert "no registered version '7'" in unregistered.json()["detail"]
    assert (await served.post(url, {"to_version": 2}, role="viewer")).status_code == 403
    assert (await served.post("/api/v1/workflows/d1/fork", role="viewer")).status_code == 403
    missing = await served.post("/api/v1/workflows/nope/migrate", {"to_version": 2})
    assert missing.status_code == 404
    assert (await served.post("/api/v1/workflows/nope/fork")).status_code == 404
    assert (await served.post("/api/v1/workflows/d1/fork", {"cancel_old": 1})).status_code == 400
    assert await served.history() == before
    assert (await served.app.get_workflow("d1")).status == "blocked"
    assert [o[0] for o in await served.audits("migrate")] == ["400"] * 10 + ["404"]


async def test_fork_starts_a_linked_instance_and_may_cancel_the_old_one(
    serve_blocked: Serve,
) -> None:
    served = await serve_blocked(deploy_v2_changes_call_1)

    kept = await served.post("/api/v1/workflows/d1/fork")
    assert kept.status_code == 201, kept.text
    assert kept.json() == {
        "status": "forked",
        "workflow_id": "d1",
        "forked_as": "d1~fork-1",
        "cancel_old": False,
    }
    await until_status(served.app, "d1~fork-1", "waiting")
    assert (await served.app.get_workflow("d1")).status == "blocked", "left as it is"

    cancelled = await served.post("/api/v1/workflows/d1/fork", {"cancel_old": True})
    assert cancelled.status_code == 201, cancelled.text
    assert cancelled.json()["forked_as"] == "d1~fork-2"
    await until_status(served.app, "d1", "cancelled")
    info = await served.app.get_workflow("d1~fork-2")
    assert info.version == "2"
    forked = [
        h.data["to"] for h in (await served.app.get_workflow("d1")).history if h.kind == "forked"
    ]
    assert forked == ["d1~fork-1", "d1~fork-2"]
    assert [o for o in await served.audits("fork") if o[0] == "done"] == [
        ("done", "d1", "forked as d1~fork-1"),
        ("done", "d1", "forked as d1~fork-2, the old one cancelled"),
    ]
