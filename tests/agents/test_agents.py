"""Agent manager and router: platform agents, user agents, capability, rules and health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contexten.agents import Agent, AgentHealth, AgentManager, RoutingRule, Task
from contexten.exceptions import (
    AgentError,
    AgentNotFound,
    NoAgentAvailable,
    PlatformUnavailable,
)
from contexten.integrations.client import ClientRegistry
from contexten.resilience.circuit_breaker import BreakerConfig
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox


class EchoAgent:
    """A user agent: answers with its name."""

    def __init__(self, name: str, capabilities: set[str], healthy: bool = True) -> None:
        self.name = name
        self.capabilities = frozenset(capabilities)
        self.healthy = healthy
        self.calls: list[Task] = []

    async def execute(self, task: Task) -> Any:
        self.calls.append(task)
        return {"agent": self.name, "action": task.action}

    def health(self) -> AgentHealth:
        return AgentHealth(available=self.healthy, detail=f"{self.name} down")


@pytest.fixture
async def registry() -> AsyncIterator[ClientRegistry]:
    sandbox = Sandbox()
    sandbox.linear.create_issue("Add login")
    async with (
        VirtualClock(datetime.now(UTC), auto_advance=True) as clock,
        sandbox.clients(clock=clock, breaker=BreakerConfig(failure_threshold=1)) as clients,
    ):
        clients.sandbox = sandbox  # type: ignore[attr-defined]
        yield clients


async def test_platform_agents_expose_bound_actions(registry: ClientRegistry) -> None:
    agents = AgentManager(registry)
    assert {a.name for a in agents} == {"github", "linear", "slack", "codegen"}
    posted = await agents.slack.post_message("C0ENG", "hello", idempotency_key="k")
    assert posted["ok"] is True
    issue = await agents.linear.get_issue("ENG-1")
    assert issue["identifier"] == "ENG-1"
    assert "slack.post_message" in agents.slack.capabilities
    assert isinstance(agents.github, Agent)


async def test_dispatch_routes_by_capability(registry: ClientRegistry) -> None:
    agents = AgentManager(registry)
    result = await agents.dispatch(
        Task(
            "move_issue",
            args=("ENG-1",),
            kwargs={"state": "Done"},
            capability="linear.move_issue",
            idempotency_key="wf:1",
        )
    )
    assert result["state"]["name"] == "Done"
    run = await agents.dispatch(
        Task("create_agent_run", kwargs={"prompt": "Fix"}, capability="code.implement")
    )
    assert run["status"] == "queued"


async def test_user_agents_and_rules() -> None:
    agents = AgentManager(platforms=False)
    local = agents.register(EchoAgent("local-llm", {"code.*"}))
    remote = agents.register(EchoAgent("remote", {"code.review"}))
    assert agents.select(Task("review", capability="code.review")) is local  # registration order
    agents.add_rule(RoutingRule("remote", capability="code.review", priority=5))
    assert agents.select(Task("review", capability="code.review")) is remote
    agents.add_rule(
        RoutingRule("local-llm", when=lambda t: t.metadata.get("team") == "infra", priority=10)
    )
    infra = Task("review", capability="code.review", metadata={"team": "infra"})
    assert agents.select(infra) is local
    assert agents.select(Task("x", agent="remote")) is remote
    with pytest.raises(AgentNotFound):
        agents.select(Task("x", agent="nobody"))
    with pytest.raises(NoAgentAvailable):
        agents.select(Task("deploy", capability="deploy.prod"))
    with pytest.raises(AgentError):
        agents.register(EchoAgent("remote", set()))


async def test_unhealthy_agent_is_not_chosen_while_another_can_serve() -> None:
    agents = AgentManager(platforms=False)
    first = agents.register(EchoAgent("first", {"code.*"}, healthy=False))
    second = agents.register(EchoAgent("second", {"code.*"}))
    agents.add_rule(RoutingRule("first", capability="code.*", priority=100))
    result = await agents.dispatch(Task("implement", capability="code.implement"))
    assert result["agent"] == "second"
    assert first.calls == []
    second.healthy = False
    with pytest.raises(NoAgentAvailable, match="first down"):
        agents.select(Task("implement", capability="code.implement"))


async def test_open_breaker_makes_the_platform_agent_unavailable(
    registry: ClientRegistry,
) -> None:
    sandbox: Sandbox = registry.sandbox  # type: ignore[attr-defined]
    agents = AgentManager(registry)
    backup = agents.register(EchoAgent("backup-coder", {"code.*"}))
    assert agents.select(Task("implement", capability="code.implement")) is agents.codegen
    sandbox.inject("status", platform="codegen", status=503, times=None)
    with pytest.raises(PlatformUnavailable) as raised:
        await agents.codegen.get_agent_run(1)
    assert "503" in str(raised.value.__cause__ or raised.value)
    assert not agents.health()["codegen"].available
    assert agents.select(Task("implement", capability="code.implement")) is backup


async def test_load_breaks_ties() -> None:
    agents = AgentManager(platforms=False)
    a = agents.register(EchoAgent("a", {"x"}))
    b = agents.register(EchoAgent("b", {"x"}))
    assert agents.router.select(Task("x"), {"a": a, "b": b}, {"a": 3}) is b
