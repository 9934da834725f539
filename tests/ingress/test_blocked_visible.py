"""A blocked workflow instance is visible in the health report, ``/readyz?verbose=1`` and
the per-version counts of the API, yet does not make the app unready."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from contexten import App, Workflow
from contexten.clock import WallClock
from contexten.ingress.server import create_server
from contexten.security import Role, create_token

from ._support import HANG_GUARD, make_config


def _app(url: str, version: int) -> App:
    app = App(url, clock=WallClock())

    @app.workflow("release", version=version)
    async def release(wf: Workflow, _: Any) -> None:
        await wf.wait_for("release.approved")

    return app


async def _until_status(app: App, workflow_id: str, status: str) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            if (await app.get_workflow(workflow_id)).status.value == status:
                return
            await asyncio.sleep(0.02)


async def test_a_blocked_instance_is_counted_but_the_app_stays_ready(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'blocked.db'}"
    old = _app(url, 1)
    await old.start()
    try:
        await old.start_workflow("release", None, workflow_id="r1")
        await _until_status(old, "r1", "waiting")
        assert (await old.health()).blocked_workflows == 0
    finally:
        await old.stop()

    new = _app(url, 2)  # version 1 deleted while r1 still runs on it
    asgi = create_server(new, make_config(auth_failure_limit=1000))
    await new.start()
    try:
        await _until_status(new, "r1", "blocked")
        await new.projections.catch_up("workflows")
        report = await new.health()
        assert report.blocked_workflows == 1
        assert report.ok, "a blocked instance does not make the app unready"
        token = (await create_token(new.store, name="v", role=Role.VIEWER)).token
        auth = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            ready = await client.get("/readyz", params={"verbose": "1"}, headers=auth)
            assert ready.status_code == 200, ready.text
            assert ready.json()["details"]["blocked_workflows"] == 1
            assert "blocked" not in (await client.get("/readyz")).text  # details need a token
            metrics = (await client.get("/metrics", headers=auth)).text
            assert "contexten_workflows_blocked 1.0" in metrics
            versions = await client.get("/api/v1/workflow-versions", headers=auth)
            assert versions.json()["items"] == [
                {"name": "release", "version": "1", "in_flight": 1, "blocked": 1}
            ]
    finally:
        await new.stop()
