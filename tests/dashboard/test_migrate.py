"""Migrating and forking a blocked instance from its page, over HTTP.

A v1 ``deploy`` instance completes two steps and waits; the dashboard's app then registers
only a v2 that changes call 1, so the instance is ``blocked``. Operators get a version select
(whose POST previews the plan and records nothing), a confirmation that needs *force* when
the superseded calls made effects, and a fork button; viewers get neither, and 403 when they
post.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from contexten import App, Workflow
from contexten.exceptions import WorkflowNotFound
from contexten.workflows.history import stream_name

from ._support import Served, serve_dashboard, wait_until
from .test_pages import audit_events, csrf_of

ran: Counter[str] = Counter()


def effect(tag: str) -> str:
    """A step with an effect outside the instance: counted."""
    ran[tag] += 1
    return tag


def deploy_v1(app: App) -> None:
    @app.workflow("deploy", version=1)
    async def deploy(wf: Workflow, _: Any) -> list[str]:
        one = await wf.step(effect, "one", name="one")
        two = await wf.step(effect, "two", name="two")
        await wf.wait_for("deploy.go")
        return [one, two]


def deploy_v2(app: App) -> None:
    @app.workflow("deploy", version=2)
    async def deploy(wf: Workflow, _: Any) -> list[str]:
        one = await wf.step(effect, "one-prime", name="one-prime")  # differs at call 1
        await wf.wait_for("deploy.go")
        return [one]


async def _run_v1_until_it_waits(tmp_path: Path) -> None:
    ran.clear()
    app = App(f"sqlite:///{tmp_path / 'dash.db'}")
    deploy_v1(app)
    await app.start()
    try:
        await app.start_workflow("deploy", None, workflow_id="d1")

        async def waiting() -> bool:
            return str((await app.get_workflow("d1")).status) == "waiting"

        await wait_until(waiting)
    finally:
        await app.stop()
    assert ran == Counter({"one": 1, "two": 1})


async def _status(served: Served, workflow_id: str) -> str:
    return str((await served.app.get_workflow(workflow_id)).status)


async def _until_status(served: Served, workflow_id: str, status: str) -> None:
    async def reached() -> bool:
        try:
            return await _status(served, workflow_id) == status
        except WorkflowNotFound:  # not started yet
            return False

    await wait_until(reached)


async def _history(served: Served) -> list[str]:
    return [r.event.type for r in await served.app.store.read_stream(stream_name("d1"))]


async def test_an_operator_previews_confirms_with_force_and_the_instance_resumes(
    tmp_path: Path,
) -> None:
    await _run_v1_until_it_waits(tmp_path)
    async with serve_dashboard(tmp_path, register=deploy_v2) as served:
        await _until_status(served, "d1", "blocked")
        before = await _history(served)
        async with served.client("operator") as operator:
            page = await operator.get("/workflows/d1")
            assert 'id="migrate-version"' in page.text
            assert re.search(r'<option value="2" selected>2</option>', page.text)
            assert 'id="fork-workflow"' in page.text
            csrf = await csrf_of(operator, "/workflows/d1")

            preview = await operator.post(
                "/workflows/d1/migrate", data={"csrf_token": csrf, "to_version": "2"}
            )
            assert preview.status_code == 200, preview.text
            assert "A preview: nothing has been recorded" in preview.text
            assert "#1 step &#39;one&#39; (completed): step &#39;one&#39; completed" in preview.text
            assert 'id="migrate-force" required' in preview.text
            assert await _history(served) == before, "the preview records nothing"

            confirm = {"csrf_token": csrf, "to_version": "2", "confirm": "yes"}
            refused = await operator.post("/workflows/d1/migrate", data=confirm)
            assert refused.status_code == 409, refused.text
            assert "was not migrated" in refused.text
            assert await _history(served) == before, "a refusal records nothing"
            assert await _status(served, "d1") == "blocked"

            no_csrf = {k: v for k, v in confirm.items() if k != "csrf_token"}
            forged = await operator.post("/workflows/d1/migrate", data={**no_csrf, "force": "yes"})
            assert forged.status_code == 403
            assert await _history(served) == before

            done = await operator.post("/workflows/d1/migrate", data={**confirm, "force": "yes"})
            assert done.status_code == 303, done.text
            assert done.headers["location"] == "/workflows/d1?done=migrated"
        await _until_status(served, "d1", "waiting")
        assert (await served.app.get_workflow("d1")).version == "2"
        assert ran == Counter({"one": 1, "two": 1, "one-prime": 1})
        migrate_audit = [
            (e.data["outcome"], e.data.get("target"), e.data.get("detail"))
            for e in await audit_events(served)
            if e.type == "contexten.audit.workflows.migrate"
        ]
        assert [a[:2] for a in migrate_audit] == [("refused", "d1"), ("done", "d1")]
        assert migrate_audit[1][2] == "version 1 -> 2, point 0, forced over 2 effect(s)"
        async with served.client("operator") as operator:
            page = await operator.get("/workflows/d1?done=migrated")
            assert "Migrated: it resumes on the chosen version" in page.text
            assert 'id="migrate-version"' not in page.text, "only a blocked instance migrates"


async def test_fork_from_the_page_and_viewers_get_no_forms_and_403(tmp_path: Path) -> None:
    await _run_v1_until_it_waits(tmp_path)
    async with serve_dashboard(tmp_path, register=deploy_v2) as served:
        await _until_status(served, "d1", "blocked")
        before = await _history(served)
        async with served.client("viewer") as viewer:
            page = await viewer.get("/workflows/d1")
            assert page.status_code == 200
            for absent in ("/migrate", "/fork", 'type="checkbox"', "<select"):
                assert absent not in page.text
            csrf = await csrf_of(viewer, "/dead-letters")
            for path, form in (
                ("/workflows/d1/migrate", {"to_version": "2", "confirm": "yes", "force": "yes"}),
                ("/workflows/d1/fork", {"cancel_old": "yes"}),
            ):
                answer = await viewer.post(path, data={"csrf_token": csrf, **form})
                assert answer.status_code == 403, path
        assert await _history(served) == before
        denied = [e for e in await audit_events(served) if e.type == "contexten.audit.auth.denied"]
        assert {e.data["detail"] for e in denied} >= {"workflows:migrate", "workflows:fork"}

        async with served.client("operator") as operator:
            csrf = await csrf_of(operator, "/workflows/d1")
            unknown = await operator.post(
                "/workflows/d1/migrate", data={"csrf_token": csrf, "to_version": "9"}
            )
            assert unknown.status_code == 400
            assert "no registered version" in unknown.text
            missing = await operator.post(
                "/workflows/nope/migrate", data={"csrf_token": csrf, "to_version": "2"}
            )
            assert missing.status_code == 404
            forked = await operator.post(
                "/workflows/d1/fork", data={"csrf_token": csrf, "cancel_old": "yes"}
            )
            assert forked.status_code == 303, forked.text
            assert forked.headers["location"] == "/workflows/d1~fork-1?done=forked"
            await _until_status(served, "d1~fork-1", "waiting")
            await _until_status(served, "d1", "cancelled")
            page = await operator.get(forked.headers["location"])
            assert "Forked: this instance was started" in page.text
        fork_audit = [
            (e.data["outcome"], e.data.get("target"), e.data.get("detail"))
            for e in await audit_events(served)
            if e.type == "contexten.audit.workflows.fork"
        ]
        assert fork_audit == [("done", "d1", "forked as d1~fork-1, the old one cancelled")]
