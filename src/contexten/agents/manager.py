"""The agent manager: the four platform agents, the user's own, and dispatch through the
router. Handlers and workflows reach it as ``ctx.agents``::

    await ctx.agents.slack.post_message(channel="C0ENG", text="Deployed")
    result = await ctx.agents.dispatch(Task("implement", capability="code.implement",
                                            kwargs={"prompt": "..."}))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from contexten.agents.base import Agent, AgentHealth, Task, health_of
from contexten.agents.platform import PlatformAgent, platform_agents
from contexten.agents.router import RoutingRule, TaskRouter
from contexten.exceptions import AgentError, AgentNotFound
from contexten.integrations.client import ClientRegistry

__all__ = ["AgentManager"]


class AgentManager:
    """Holds agents by name and runs tasks on the one the router picks.

    Args:
        clients: the client registry the platform agents act through (default: the registry
            in force when they are used).
        router: the task router (default: capability and health only).
        platforms: register the GitHub, Linear, Slack and Codegen agents.
    """

    def __init__(
        self,
        clients: ClientRegistry | None = None,
        *,
        router: TaskRouter | None = None,
        platforms: bool = True,
    ) -> None:
        self.clients = clients
        self.router = router or TaskRouter()
        self._agents: dict[str, Agent] = {}
        self._in_flight: dict[str, int] = {}
        if platforms:
            for agent in platform_agents(clients):
                self.register(agent)

    def register(self, agent: Agent, *, replace: bool = False) -> Agent:
        """Add ``agent`` (``replace`` to swap one of the same name)."""
        if not isinstance(agent, Agent):
            raise TypeError(f"{agent!r} is not an Agent (name, capabilities, execute)")
        if agent.name in self._agents and not replace:
            raise AgentError(f"an agent named {agent.name!r} is already registered")
        self._agents[agent.name] = agent
        return agent

    def unregister(self, name: str) -> None:
        """Remove the agent called ``name``."""
        if self._agents.pop(name, None) is None:
            raise AgentNotFound(f"no agent named {name!r}")

    def add_rule(self, rule: RoutingRule) -> None:
        """Add a routing rule."""
        self.router.add_rule(rule)

    def get(self, name: str) -> Agent:
        """The agent called ``name``."""
        try:
            return self._agents[name]
        except KeyError:
            raise AgentNotFound(f"no agent named {name!r}") from None

    __getitem__ = get

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._agents[name]
        except KeyError:
            raise AttributeError(f"no agent named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))

    def __len__(self) -> int:
        return len(self._agents)

    @property
    def github(self) -> PlatformAgent:
        """The GitHub agent."""
        return self._platform("github")

    @property
    def linear(self) -> PlatformAgent:
        """The Linear agent."""
        return self._platform("linear")

    @property
    def slack(self) -> PlatformAgent:
        """The Slack agent."""
        return self._platform("slack")

    @property
    def codegen(self) -> PlatformAgent:
        """The Codegen agent."""
        return self._platform("codegen")

    def _platform(self, name: str) -> PlatformAgent:
        agent = self.get(name)
        if not isinstance(agent, PlatformAgent):
            raise AgentError(f"agent {name!r} is not a platform agent")
        return agent

    def health(self) -> dict[str, AgentHealth]:
        """Every agent's health, by name (for ``/readyz`` and the dashboard)."""
        return {name: health_of(agent) for name, agent in self._agents.items()}

    def in_flight(self) -> dict[str, int]:
        """Tasks running now, by agent."""
        return {name: n for name, n in self._in_flight.items() if n}

    def select(self, task: Task) -> Agent:
        """The agent the router would pick for ``task`` now."""
        return self.router.select(task, self._agents, self._in_flight)

    async def dispatch(self, task: Task) -> Any:
        """Run ``task`` on the agent the router picks; return its result."""
        agent = self.select(task)
        self._in_flight[agent.name] = self._in_flight.get(agent.name, 0) + 1
        try:
            return await agent.execute(task)
        finally:
            self._in_flight[agent.name] -= 1
