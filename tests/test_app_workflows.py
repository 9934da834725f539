"""Workflows and state machines through the App: decorators, triggers, waits, restarts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contexten import App, Event, StateMachine, Transition, Workflow
from contexten.clock import WallClock
from contexten.exceptions import WorkflowAlreadyStarted, WorkflowFailedError
from contexten.integrations import github
from contexten.observability.app_metrics import instrument_app
from contexten.observability.metrics import Metrics
from contexten.testing import create_test_app
from contexten.testing.sandbox import Sandbox

HANG_GUARD = 30


async def status_of(app: App, workflow_id: str, wanted: str) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            try:
                if str((await app.get_workflow(workflow_id)).status) == wanted:
                    return
            except Exception:  # not started yet
                pass
            await asyncio.sleep(0.005)


async def test_event_triggered_saga_waits_for_a_correlated_event() -> None:
    # The wall clock: the test app's virtual clock would skip the 4-hour timeout while the
    # test polls for the "waiting" status.
    app = create_test_app(clock=WallClock())
    effects: list[str] = []

    async def create_run(prompt: str) -> dict[str, Any]:
        effects.append(f"run:{prompt}")
        return {"id": 7}

    @app.workflow("implement", on="linear.issue.updated", key=lambda e: e.correlation_id)
    async def implement(wf: Workflow, event: Event) -> dict[str, Any]:
        run = await wf.step(create_run, event.data["title"])
        pr = await wf.wait_for(
            "github.pull_request.opened",
            correlation_id=event.correlation_id,
            timeout=timedelta(hours=4),
        )
        return {"run": run["id"], "pr": pr.data["number"]}

    async with app:
        trigger = Event(
            type="linear.issue.updated",
            source="linear",
            correlation_id="ENG-1",
            data={"title": "Fix it"},
        )
        await app.publish(trigger)
        await app.publish(trigger.replace(id="second-delivery-same-key"))
        await status_of(app, "implement:ENG-1", "waiting")
        await app.publish(
            Event(
                type="github.pull_request.opened",
                source="github",
                correlation_id="ENG-1",
                data={"number": 12},
            )
        )
        await status_of(app, "implement:ENG-1", "completed")
        info = await app.get_workflow("implement:ENG-1")
        assert info.result == {"run": 7, "pr": 12}
        assert effects == ["run:Fix it"]
        assert [i.workflow_id for i in await app.list_workflows()] == ["implement:ENG-1"]


async def test_start_workflow_is_idempotent_and_cancel_compensates() -> None:
    app = create_test_app(clock=WallClock())
    undone: list[int] = []

    async def book(n: int) -> int:
        return n

    async def unbook(n: int) -> None:
        undone.append(n)

    @app.workflow("booking")
    async def booking(wf: Workflow, n: int) -> None:
        await wf.step(book, n, compensate=unbook)
        await wf.sleep(timedelta(days=1))

    async with app:
        handles = await asyncio.gather(
            *(app.start_workflow("booking", 5, workflow_id="b-1") for _ in range(20))
        )
        assert {h.workflow_id for h in handles} == {"b-1"}
        with pytest.raises(WorkflowAlreadyStarted):
            await app.start_workflow("booking", 5, workflow_id="b-1", if_exists="raise")
        await status_of(app, "b-1", "sleeping")
        assert await app.cancel_workflow("b-1")
        await status_of(app, "b-1", "cancelled")
        assert undone == [5]


async def test_state_machine_through_the_app() -> None:
    app = create_test_app()
    app.add(
        StateMachine(
            "pr-lifecycle",
            initial="open",
            key=lambda e: e.subject,
            transitions=[
                Transition("open", on="github.pull_request.review_requested", to="in_review"),
                Transition(
                    ["open", "in_review"],
                    on="github.pull_request.closed",
                    to="merged",
                    when=lambda e: e.data["merged"],
                ),
            ],
            terminal=["merged"],
        )
    )
    async with app:
        for type_, data in [("review_requested", {}), ("closed", {"merged": True})]:
            await app.publish(
                Event(
                    type=f"github.pull_request.{type_}",
                    source="github",
                    subject="acme/api#1",
                    data=data,
                )
            )
        await status_of(app, "pr-lifecycle:acme/api#1", "completed")
        info = await app.get_workflow("pr-lifecycle:acme/api#1")
        assert info.state == "merged"


async def test_a_sleeping_workflow_finishes_after_the_app_restarts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    calls: list[str] = []

    def build() -> App:
        app = App(store=url)

        async def note(what: str) -> str:
            calls.append(what)
            return what

        @app.workflow("nap")
        async def nap(wf: Workflow, _: Any) -> str:
            await wf.step(note, "before")
            await wf.sleep(0.3)
            return str(await wf.step(note, "after"))

        return app

    first = build()
    async with first:
        await first.start_workflow("nap", None, workflow_id="nap-1")
        await status_of(first, "nap-1", "sleeping")
    second = build()
    async with second:
        await status_of(second, "nap-1", "completed")
        assert (await second.get_workflow("nap-1")).result == "after"
    assert calls == ["before", "after"]


async def test_a_step_whose_platform_call_hangs_fails_by_its_timeout_and_is_counted() -> None:
    sandbox = Sandbox()
    number = sandbox.github.create_issue("acme/api", "Bug")["number"]
    hang = sandbox.inject(  # every comment POST hangs (for real: 11 days on the event loop)
        "latency",
        platform="github",
        method="POST",
        path="/repos/acme/api/issues",
        latency=10**6,
        times=None,
    )
    app = create_test_app()  # the default step timeout is real time: shortened below
    app.workflows.default_step_timeout = 0.2
    app.use_agents(sandbox.clients(clock=app.clock))
    metrics = Metrics()
    instrument_app(metrics, app.health, app.workflows.stats)

    @app.workflow("notify")
    async def notify(wf: Workflow, issue: int) -> Any:
        return await wf.step(github.create_issue_comment, "acme/api", issue, "Looking")

    async with app:
        handle = await app.start_workflow("notify", number, workflow_id="notify-1")
        with pytest.raises(WorkflowFailedError):
            await handle.result(timeout=HANG_GUARD)
        info = await app.get_workflow("notify-1")
        await metrics.refresh()

    assert hang.fired == 3, "each of the default policy's three attempts hung and timed out"
    (step_failed,) = [h for h in info.history if h.kind == "step_failed"]
    assert step_failed.data["error"]["type"] == "contexten.exceptions.StepTimeout"
    assert "timed out after 0.2s" in step_failed.data["error"]["message"]
    assert step_failed.data["attempts"] == 3
    assert info.history[-1].kind == "failed"
    assert "StepTimeout" in info.history[-1].data["error"]["message"]
    text = metrics.render().decode()
    assert 'contexten_workflows_failed_total{cause="StepTimeout",workflow="notify"} 1.0' in text
    assert 'contexten_workflows_ended_total{status="failed",workflow="notify"} 1.0' in text
    assert sandbox.github.repo("acme/api").comments == {}
