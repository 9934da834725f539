"""Approvals bound to a durable wait accept only an allowed approver."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from contexten import App, Event
from contexten.integrations import slack
from contexten.resilience import RetryPolicy
from contexten.testing.sandbox import Sandbox
from contexten.workflows import Workflow

HANG_GUARD = 20.0


async def _press(app: App, sandbox: Sandbox, ts: str, action_id: str, user: str) -> None:
    payload = sandbox.slack.press("#eng", ts, action_id, user=user)
    await app.publish(
        Event(type="slack.block_actions", source="slack", subject="C0ENG", data=payload)
    )


async def _result(app: App, workflow_id: str) -> Any:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            info = await app.get_workflow(workflow_id)
            if info.status.value in ("completed", "failed", "blocked"):
                return info
            await asyncio.sleep(0.02)


def _app(sandbox: Sandbox, approvers: slack.Approvers) -> App:
    app = App(store="memory://")
    app.use_agents(sandbox.clients(retry=RetryPolicy.no_retries()))

    @app.workflow("ship")
    async def ship(wf: Workflow, request: dict[str, Any]) -> dict[str, Any]:
        message = await wf.step(slack.request_approval, "#eng", "Merge #7?", wf.workflow_id)
        approval = await slack.wait_for_approval(
            wf,
            wf.workflow_id,
            approvers=approvers,
            channel=message["channel"],
            timeout=timedelta(hours=1),
        )
        return {"decision": approval.decision, "approver": approval.approver}

    return app


async def _ts(sandbox: Sandbox) -> str:
    async with asyncio.timeout(HANG_GUARD):
        while not sandbox.slack.messages["C0ENG"]:  # noqa: ASYNC110 - the sandbox's state
            await asyncio.sleep(0.02)
    return next(iter(sandbox.slack.messages["C0ENG"]))


@pytest.mark.parametrize(
    "approvers",
    [
        slack.Approvers(users={"U0LEAD"}),
        slack.Approvers(usergroups={"S0LEADS"}),
        slack.Approvers(allow=lambda user: user.endswith("LEAD")),
    ],
    ids=["list", "usergroup", "predicate"],
)
async def test_only_an_allowed_approver_decides(approvers: slack.Approvers) -> None:
    sandbox = Sandbox()
    sandbox.slack.add_usergroup("S0LEADS", ["U0LEAD"])
    app = _app(sandbox, approvers)
    async with app:
        await app.start_workflow("ship", {}, workflow_id="wf-ship")
        ts = await _ts(sandbox)
        await _press(app, sandbox, ts, slack.APPROVE_ACTION_ID, "U0INTERN")
        async with asyncio.timeout(HANG_GUARD):
            while not sandbox.slack.ephemeral:  # noqa: ASYNC110 - the sandbox's state
                await asyncio.sleep(0.02)
        assert sandbox.slack.ephemeral == [
            {"channel": "C0ENG", "user": "U0INTERN", "text": slack.NOT_ALLOWED_TEXT}
        ]
        info = await app.get_workflow("wf-ship")
        assert info.status.value in ("running", "waiting")  # the intern's press decided nothing
        await _press(app, sandbox, ts, slack.REJECT_ACTION_ID, "U0LEAD")
        done = await _result(app, "wf-ship")
    assert done.status.value == "completed"
    assert done.result == {"decision": "rejected", "approver": "U0LEAD"}
    assert len(sandbox.slack.ephemeral) == 1


def test_approvers_take_collections() -> None:
    with pytest.raises(TypeError):
        slack.Approvers(users="U0LEAD")
