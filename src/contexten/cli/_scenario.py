"""The demo's scripted scenario: what people do in the sandbox, through its control API.

Two work items go through the dev-team app (``examples/devteam.py``):

* **happy path**: Ada files an issue and labels it ``agent``; the agent implements it; when
  the app asks for an approval in Slack, Ada presses *Approve*; the pull request is merged
  and the issue is done;
* **failing path**: an issue whose description contains ``[sandbox:fail]`` (the sandbox's
  agent fails such runs); the app rolls everything back.

Every step goes through the sandbox's ``/_sandbox`` control API over HTTP, and the sandbox
sends the platforms' signed webhooks to the app, exactly as the real platforms would.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Final

import httpx

from contexten.app import App
from contexten.events.envelope import Event
from contexten.exceptions import WorkflowFailedError
from contexten.integrations.slack import APPROVE_ACTION_ID

__all__ = ["FAILING_ISSUE", "HAPPY_ISSUE", "WORKFLOW", "Outcome", "Scenario"]

WORKFLOW: Final = "implement-issue"
HAPPY_ISSUE: Final = (
    "Add rate limiting to the public API",
    "Limit each API key to 100 requests a minute; answer 429 with a Retry-After header.",
)
FAILING_ISSUE: Final = (
    "Migrate billing to the new ledger",
    "Move invoices and refunds to the ledger service.\n\n"
    "[sandbox:fail] (the sandbox's agent fails runs whose prompt says this)",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one work item ended."""

    identifier: str
    workflow_id: str
    status: str
    result: Any = None
    error: str | None = None


class Scenario:
    """Drives the sandbox like the people of the story would.

    Args:
        control: an HTTP client whose base URL is the sandbox (``http://127.0.0.1:8900``).
        app: the running app (its event log tells when the approval request was posted).
        timeout: seconds any one wait may take before the scenario gives up.
    """

    def __init__(self, control: httpx.AsyncClient, app: App, *, timeout: float = 60.0) -> None:
        self.control = control
        self.app = app
        self.timeout = timeout

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.control.post(f"/_sandbox{path}", json=body)
        response.raise_for_status()
        return response.json()

    async def file_issue(self, title: str, description: str) -> dict[str, Any]:
        """Ada files a Linear issue; returns it (``identifier``, ``id``...)."""
        issue: dict[str, Any] = await self._post(
            "/linear/issues", {"title": title, "description": description}
        )
        return issue

    async def label(self, issue: dict[str, Any], label: str = "agent") -> None:
        """Ada adds ``label`` to the issue (this hands it to the agent)."""
        await self._post(f"/linear/issues/{issue['id']}", {"add_labels": [label]})

    async def press(self, channel: str, ts: str, action_id: str = APPROVE_ACTION_ID) -> None:
        """Ada presses a button on a Slack message."""
        await self._post("/slack/press", {"channel": channel, "ts": ts, "action_id": action_id})

    async def approval_request(self, workflow_id: str) -> dict[str, Any]:
        """The Slack message the workflow posted to ask for approval (from the event log)."""
        action = await self.wait_for_event(
            lambda e: (
                e.type == "contexten.action.slack.request_approval"
                and e.data.get("workflow_id") == workflow_id
            )
        )
        result: dict[str, Any] = action.data["result"]
        return result

    async def wait_for_event(self, accept: Any) -> Event:
        """The first stored event ``accept`` accepts (waiting for it if need be)."""
        store = self.app.store
        position = 0
        async with asyncio.timeout(self.timeout):
            while True:
                for rec in await store.read_all(after=position, limit=500):
                    position = rec.position
                    if accept(rec.event):
                        return rec.event
                with contextlib.suppress(TimeoutError):
                    await store.wait_for_new(position, timeout=1.0)

    async def outcome(self, identifier: str) -> Outcome:
        """Wait for the work item's workflow to end."""
        workflow_id = f"{WORKFLOW}:{identifier}"
        handle = self.app.workflows.get_handle(workflow_id)
        try:
            result = await handle.result(timeout=self.timeout)
        except WorkflowFailedError as e:
            reason = e.error.get("message") if isinstance(e.error, dict) else None
            return Outcome(identifier, workflow_id, e.status, error=str(reason or e))
        return Outcome(identifier, workflow_id, "completed", result=result)

    async def happy_path(self) -> Outcome:
        """File, label, approve; the change is merged."""
        issue = await self.file_issue(*HAPPY_ISSUE)
        await self.label(issue)
        approval = await self.approval_request(f"{WORKFLOW}:{issue['identifier']}")
        await self.press(approval["channel"], approval["ts"])
        return await self.outcome(issue["identifier"])

    async def failing_path(self) -> Outcome:
        """File and label an issue the agent fails on; the app rolls back."""
        issue = await self.file_issue(*FAILING_ISSUE)
        await self.label(issue)
        return await self.outcome(issue["identifier"])
