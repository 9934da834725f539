"""Codegen client contract: against the sandbox, and against recorded Codegen responses."""

from __future__ import annotations

import pytest

from contexten.exceptions import ConfigurationError, PlatformRequestError
from contexten.integrations import codegen
from contexten.integrations.client import ClientRegistry, use_clients
from contexten.integrations.codegen import AgentRunPoller, CodegenClient
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox

from .conftest import replay, settings


@pytest.fixture
def cg(clients: ClientRegistry) -> CodegenClient:
    return clients.get(CodegenClient)


async def test_run_lifecycle_opens_a_pull_request(cg: CodegenClient, sandbox: Sandbox) -> None:
    sandbox.linear.create_issue("Add login")
    run = await cg.create_agent_run("ENG-1 Add login", metadata={"repo": "acme/api"})
    assert run["status"] == "queued"
    sandbox.codegen.advance(force=True)
    assert (await cg.get_agent_run(run["id"]))["status"] == "running"
    sandbox.codegen.finish_all()
    done = await cg.get_agent_run(run["id"])
    assert done["status"] == "completed"
    (pr,) = done["github_pull_requests"]
    assert pr["head_branch_name"].startswith("codegen-bot/eng-1")
    opened = [d.json() for d in sandbox.outbox if d.event == "pull_request"]
    assert opened[-1]["action"] == "opened"
    assert opened[-1]["pull_request"]["title"].startswith("ENG-1")


async def test_failing_run_and_cancel(clients: ClientRegistry, sandbox: Sandbox) -> None:
    with use_clients(clients):
        failing = await codegen.create_agent_run("Fix it [sandbox:fail]", repo="acme/api")
        sandbox.codegen.finish_all()
        assert (await codegen.get_agent_run(failing["id"]))["status"] == "failed"

        run = await codegen.create_agent_run("Long task", repo="acme/api", idempotency_key="r")
        cancelled = await codegen.create_agent_run.undo(result=run)
        assert cancelled["status"] == "cancelled"
        again = await codegen.create_agent_run.undo(result=run)  # idempotent
        assert again["status"] == "cancelled"


async def test_create_is_idempotent_with_lost_response(cg: CodegenClient, sandbox: Sandbox) -> None:
    sandbox.inject("lost_response", platform="codegen", method="POST")
    run = await cg.create_agent_run("Do it", idempotency_key="wf-1:s1")
    same = await cg.create_agent_run("Do it", idempotency_key="wf-1:s1")
    assert same["id"] == run["id"]
    assert len(sandbox.codegen.runs) == 1


async def test_poller_emits_each_transition_once(cg: CodegenClient, sandbox: Sandbox) -> None:
    run = await cg.create_agent_run("ENG-1 Add login", metadata={"correlation_id": "ENG-1"})
    poller = AgentRunPoller(cg)
    poller.track([run["id"]])
    first = await poller.poll_once()
    assert [e.type for e in first] == ["codegen.agent_run.created"]
    assert await poller.poll_once() == []
    sandbox.codegen.finish_all()
    last = await poller.poll_once()
    assert [e.type for e in last] == ["codegen.agent_run.completed"]
    assert last[0].correlation_id == "ENG-1"
    assert last[0].delivery_id == f"codegen:{run['id']}:completed"
    assert poller.tracked == []


def test_org_id_is_required() -> None:
    with pytest.raises(ConfigurationError, match="CONTEXTEN_CODEGEN_ORG_ID"):
        CodegenClient.from_env({"CONTEXTEN_CODEGEN_TOKEN": "t"})


# -- recorded Codegen responses --------------------------------------------------------------


async def test_recorded_run_and_throttle(recording_clock: VirtualClock) -> None:
    transport = replay("codegen_rate_limited", "codegen_agent_run")
    async with CodegenClient(
        settings("https://api.codegen.com"),
        org_id=42,
        transport=transport,
        clock=recording_clock,
    ) as cg:
        run = await cg.get_agent_run(789)
    assert run["status"] == "ACTIVE"
    event = codegen.agent_run_event(run)
    assert event.type == "codegen.agent_run.started"
    assert recording_clock.monotonic() >= 6
    request = transport.seen[-1]  # type: ignore[attr-defined]
    assert request.url.path == "/v1/organizations/42/agent/run/789"


async def test_recorded_create_carries_the_key_in_metadata_only(
    recording_clock: VirtualClock,
) -> None:
    transport = replay("codegen_agent_run")
    async with CodegenClient(
        settings("https://api.codegen.com"),
        org_id=42,
        transport=transport,
        clock=recording_clock,
    ) as cg:
        run = await cg.create_agent_run("Fix the bug", idempotency_key="wf-1:step-1")
    assert run["id"] == 789
    lookup, create = transport.seen  # type: ignore[attr-defined]
    assert lookup.url.path.endswith("/agent/runs")
    assert "idempotency-key" not in create.headers  # Codegen documents no such header
    assert b'"contexten_idempotency_key":"wf-1:step-1"' in create.content


async def test_validation_error_is_final(cg: CodegenClient, sandbox: Sandbox) -> None:
    with pytest.raises(PlatformRequestError) as raised:
        await cg.create_agent_run("Fix it", repo_id="acme/api")  # type: ignore[arg-type]
    assert raised.value.status == 422
    assert sandbox.codegen.runs == {}
