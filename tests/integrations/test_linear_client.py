"""Linear client contract: against the sandbox, and against recorded Linear responses."""

from __future__ import annotations

import pytest

from contexten.exceptions import PlatformNotFound, PlatformRequestError
from contexten.integrations import linear
from contexten.integrations.client import ClientRegistry, use_clients
from contexten.integrations.linear import LinearClient
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox

from .conftest import replay, settings


@pytest.fixture
def lin(clients: ClientRegistry) -> LinearClient:
    return clients.get(LinearClient)


async def test_get_issue_by_identifier_and_rate_headers(
    lin: LinearClient, sandbox: Sandbox
) -> None:
    created = sandbox.linear.create_issue("Add login", labels=["agent"])
    issue = await lin.get_issue(created["identifier"])
    assert issue["id"] == created["id"]
    assert issue["state"]["name"] == "Todo"
    assert [label["name"] for label in issue["labels"]["nodes"]] == ["agent"]
    assert lin.health().rate_limits["requests"].limit == 5000
    with pytest.raises(PlatformNotFound):
        await lin.get_issue("ENG-999")


async def test_move_issue_and_undo(clients: ClientRegistry, sandbox: Sandbox) -> None:
    created = sandbox.linear.create_issue("Add login")
    with use_clients(clients):
        moved = await linear.move_issue(created["id"], state="in review", idempotency_key="m")
        assert moved["state"]["name"] == "In Review"
        assert moved["contexten_previous"]["state"]["name"] == "Todo"
        await linear.move_issue.undo(created["id"], state="In Review", result=moved)
        assert (await linear.get_issue(created["id"]))["state"]["name"] == "Todo"
    update = [d.json() for d in sandbox.outbox if d.platform == "linear"][1]
    assert update["action"] == "update"
    assert update["type"] == "Issue"
    assert "stateId" in update["updatedFrom"]
    assert update["actor"]["id"] == sandbox.linear.bot["id"]


async def test_unknown_state_is_a_request_error(lin: LinearClient, sandbox: Sandbox) -> None:
    created = sandbox.linear.create_issue("Add login")
    with pytest.raises(PlatformRequestError, match="no workflow state named 'Shipped'"):
        await linear.move_issue(created["id"], state="Shipped", client=lin)


async def test_workflow_states_are_cached(lin: LinearClient, sandbox: Sandbox) -> None:
    team = sandbox.linear.team["id"]
    fault = sandbox.inject("status", platform="linear", path="workflowStates", times=None)
    with pytest.raises(Exception, match="Internal server error"):
        await lin.workflow_state(team, "Done")
    sandbox.faults.remove(fault)
    done = await lin.workflow_state(team, "Done")
    sandbox.inject("status", platform="linear", path="workflowStates", times=None)
    assert (await lin.workflow_state(team, "done")) == done  # served from the cache


async def test_labels_assignee_archive(clients: ClientRegistry, sandbox: Sandbox) -> None:
    created = sandbox.linear.create_issue("Add login")
    with use_clients(clients):
        labelled = await linear.add_issue_labels(created["id"], ["agent", "bug"])
        assert {n["name"] for n in labelled["labels"]["nodes"]} == {"agent", "bug"}
        await linear.add_issue_labels.undo(created["id"], ["agent", "bug"], result=labelled)
        assert (await linear.get_issue(created["id"]))["labels"]["nodes"] == []

        assigned = await linear.assign_issue(created["id"], sandbox.linear.human["id"])
        assert assigned["assignee"]["name"] == "Ada Lovelace"
        await linear.assign_issue.undo(created["id"], None, result=assigned)
        assert (await linear.get_issue(created["id"]))["assignee"] is None

        await linear.archive_issue(created["id"])
        assert (await linear.get_issue(created["id"]))["archivedAt"] is not None
        await linear.archive_issue.undo(created["id"])
        assert (await linear.get_issue(created["id"]))["archivedAt"] is None


async def test_comment_is_created_once_despite_a_lost_response(
    clients: ClientRegistry, sandbox: Sandbox
) -> None:
    created = sandbox.linear.create_issue("Add login")
    lost = sandbox.inject("lost_response", platform="linear", path="commentCreate")
    with use_clients(clients):
        comment = await linear.create_comment(created["id"], "Agent started", idempotency_key="c")
        assert lost.fired == 1
        again = await linear.create_comment(created["id"], "Agent started", idempotency_key="c")
        assert again["id"] == comment["id"]
        assert len(sandbox.linear.comments) == 1
        await linear.create_comment.undo(created["id"], "Agent started", result=comment)
        assert sandbox.linear.comments == {}


async def test_issue_create_is_idempotent(clients: ClientRegistry, sandbox: Sandbox) -> None:
    team = sandbox.linear.team["id"]
    with use_clients(clients):
        first = await linear.create_issue(
            team, "Flaky test", state="Backlog", labels=["bug"], idempotency_key="wf-7:s1"
        )
        second = await linear.create_issue(
            team, "Flaky test", state="Backlog", labels=["bug"], idempotency_key="wf-7:s1"
        )
    assert first["id"] == second["id"]
    assert first["state"]["name"] == "Backlog"
    assert len(sandbox.linear.issues) == 1


async def test_rate_limited_error_waits(
    lin: LinearClient, sandbox: Sandbox, clock: VirtualClock
) -> None:
    created = sandbox.linear.create_issue("Add login")
    sandbox.inject("rate_limit", platform="linear", retry_after=15)
    start = clock.monotonic()
    await lin.get_issue(created["id"])
    assert clock.monotonic() - start >= 14


# -- recorded Linear responses ---------------------------------------------------------------


async def test_recorded_issue_update(recording_clock: VirtualClock) -> None:
    transport = replay("linear_issue_update")
    async with LinearClient(
        settings("https://api.linear.app"), transport=transport, clock=recording_clock
    ) as lin:
        issue = await lin.update_issue("ENG-123", stateId="6c1f3a1e-0d2b-4c1e-8f1a-2f0e9d7b5c44")
        assert issue["state"]["name"] == "In Review"
        assert lin.health().rate_limits["requests"].remaining == 4999
    request = transport.seen[0]  # type: ignore[attr-defined]
    assert request.headers["authorization"] == "test-token", "API keys go without Bearer"
    assert request.url.path == "/graphql"


async def test_recorded_ratelimited_then_success(recording_clock: VirtualClock) -> None:
    transport = replay("linear_ratelimited", "linear_issue_update")
    async with LinearClient(
        settings("https://api.linear.app"), transport=transport, clock=recording_clock
    ) as lin:
        issue = await lin.update_issue("ENG-123", title="x")
    assert issue["identifier"] == "ENG-123"
    assert recording_clock.monotonic() >= 11  # reset header: 12 s after 2030-01-01


async def test_recorded_input_error(recording_clock: VirtualClock) -> None:
    transport = replay("linear_input_error")
    async with LinearClient(
        settings("https://api.linear.app"), transport=transport, clock=recording_clock
    ) as lin:
        with pytest.raises(PlatformRequestError, match="stateId must be a UUID") as raised:
            await lin.update_issue("ENG-123", stateId="nope")
    assert raised.value.code == "INVALID_INPUT"
    assert len(transport.seen) == 1  # type: ignore[attr-defined]
