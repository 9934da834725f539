"""A small app with everything the dashboard shows, served for real on loopback.

The app has a handler that fails on ``test.poison.*`` events (so they park in the dead-letter
queue), a workflow that completes, one that fails after a step and is compensated, and a
state machine; one token per role is created in its store. Tests drive it over HTTP (httpx)
or in Chromium (Playwright), never through mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from contexten import App, Event, RetryPolicy, StateMachine, Transition, Workflow
from contexten.dashboard import dashboard_routes
from contexten.ingress import IngressConfig
from contexten.ingress.server import IngressServer
from contexten.security import Role, create_token

HANG_GUARD = 60.0
ROLES = ("viewer", "operator", "admin")


@dataclass
class Served:
    """A running app with its dashboard: base URL and one token per role."""

    app: App
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    poison_failures: dict[str, int] = field(default_factory=dict)
    healed: set[str] = field(default_factory=set)

    def client(self, role: str | None = None, **options: Any) -> httpx.AsyncClient:
        """An HTTP client logged in as ``role`` via the session cookie (None: anonymous)."""
        cookies = {"contexten_session": self.tokens[role]} if role else None
        return httpx.AsyncClient(
            base_url=self.url, cookies=cookies, timeout=HANG_GUARD, follow_redirects=False,
            **options,
        )  # fmt: skip

    async def publish(self, event: Event) -> None:
        await self.app.publish(event)


def build_app(
    store_url: str,
    served: dict[str, Any],
    *,
    schedule: bool = False,
    register: Callable[[App], None] | None = None,
) -> App:
    app = App(store_url, checkpoint_interval=0.01)
    if register is not None:
        register(app)
    if schedule:

        @app.schedule("nightly", every=timedelta(hours=1))
        async def nightly(wf: Workflow, _: Any) -> str:
            return "done"

    failures: dict[str, int] = served.setdefault("failures", {})
    healed: set[str] = served.setdefault("healed", set())

    @app.on(
        "test.poison.*",
        name="poison-handler",
        retry=RetryPolicy(maximum_attempts=2, initial_interval=0.01, jitter=0.0),
    )
    async def poison(event: Event, ctx: Any) -> None:
        if event.id in healed:
            return
        failures[event.id] = failures.get(event.id, 0) + 1
        raise RuntimeError(f"cannot handle {event.subject!r}")

    async def open_branch(name: str) -> dict[str, str]:
        return {"branch": name}

    async def close_branch(name: str) -> None:
        return None

    async def explode(reason: str) -> None:
        raise ValueError(reason)

    async def flaky(key: str) -> str:
        if key not in healed:
            raise ValueError(f"{key}: the agent is down")
        return "ok"

    @app.workflow("ship")
    async def ship(wf: Workflow, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("flaky"):  # nothing to compensate before it: the instance ends failed
            await wf.step(flaky, payload["key"], retry=RetryPolicy(maximum_attempts=1))
        branch = await wf.step(open_branch, payload["key"], compensate=close_branch)
        if payload.get("fail"):
            await wf.step(explode, "the agent gave up", retry=RetryPolicy(maximum_attempts=1))
        return {"branch": branch["branch"], "merged": True}

    app.add(
        StateMachine(
            "pr-lifecycle",
            initial="open",
            key=lambda e: e.subject,
            transitions=[
                Transition("open", on="test.pr.review_requested", to="in_review"),
                Transition(["open", "in_review"], on="test.pr.merged", to="merged"),
                Transition(["open", "in_review"], on="test.pr.closed", to="closed"),
            ],
        )
    )
    return app


@contextlib.asynccontextmanager
async def serve_dashboard(
    tmp_path: Path,
    *,
    schedule: bool = False,
    register: Callable[[App], None] | None = None,
    **route_options: Any,
) -> AsyncIterator[Served]:
    """Serve the test app with its dashboard on a free loopback port (its store:
    ``dash.db`` in ``tmp_path``; ``register`` adds more to the app)."""
    extra: dict[str, Any] = {}
    app = build_app(
        f"sqlite:///{tmp_path / 'dash.db'}", extra, schedule=schedule, register=register
    )
    server = IngressServer(
        app,
        port=0,
        config=IngressConfig(auth_failure_limit=50),
        extra_routes=dashboard_routes(app, **route_options),
        graceful_timeout=2,
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("the server returned before it started")
                await asyncio.sleep(0.01)
        served = Served(app, f"http://127.0.0.1:{server.port}")
        served.poison_failures = extra["failures"]
        served.healed = extra["healed"]
        for role in ROLES:
            issued = await create_token(app.store, name=f"{role}-1", role=Role.parse(role))
            served.tokens[role] = issued.token
        yield served
    finally:
        server.request_stop()
        async with asyncio.timeout(HANG_GUARD):
            await asyncio.gather(task, return_exceptions=True)


async def wait_until(predicate: Any, timeout: float = HANG_GUARD) -> None:
    """Poll an async predicate until it is true (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - polling the store, nothing to await
            await asyncio.sleep(0.02)


async def populate(served: Served) -> dict[str, str]:
    """Make one of everything: events, two workflows, a state machine, a dead letter."""
    app = served.app
    await app.start_workflow("ship", {"key": "ENG-1"}, workflow_id="ship:ENG-1")
    await app.start_workflow("ship", {"key": "ENG-2", "fail": True}, workflow_id="ship:ENG-2")
    await app.publish(
        Event(type="test.pr.review_requested", subject="pr-7", correlation_id="ENG-1")
    )
    poison = Event(type="test.poison.pill", subject="pill-1", correlation_id="ENG-1")
    await app.publish(poison)

    async def settled() -> bool:
        letters = await app.dead_letters.list()
        ok = {str(w.status) for w in await app.list_workflows()}
        folded = await app.read.open_dead_letters()  # the pages read the read model
        return (
            len(letters) == 1 and folded == 1 and "running" not in ok and "compensating" not in ok
        )

    await wait_until(settled)
    letter = (await app.dead_letters.list())[0]
    return {"letter": letter.id, "poison": poison.id}


async def leave_an_old_version(tmp_path: Path, workflow_id: str = "ship:ENG-OLD") -> None:
    """Store an instance of ``ship`` started by a deploy whose version ``0`` is gone, before
    the app is served: when the served app starts it finds no code for that version and
    blocks the instance (``version_not_registered``)."""
    from contexten.store.sqlite import SqliteEventStore
    from contexten.workflows.history import history_event, stream_name

    started = history_event(
        "started",
        {"workflow_id": workflow_id, "name": "ship", "version": "0", "kind": "function",
         "input": {"key": "ENG-OLD"}},
        workflow_id,
    )  # fmt: skip
    async with SqliteEventStore(f"sqlite:///{tmp_path / 'dash.db'}") as store:
        await store.append(stream_name(workflow_id), [started])
