"""Task routing: which agent takes a task, by capability, rules and health.

The order of preference for a task:

1. a task pinned to an agent (``Task(agent="slack")``) goes there;
2. otherwise the candidates are the agents named by matching :class:`RoutingRule` s (highest
   ``priority`` first) followed by every agent offering the task's capability;
3. among candidates, healthy agents come first (an agent whose breaker is open is not chosen
   while another can serve), then rule priority, then the fewest tasks in flight, then
   registration order.

If no candidate is healthy the router raises
:class:`~contexten.exceptions.NoAgentAvailable` rather than sending work into an open breaker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from contexten.agents.base import Agent, AgentHealth, Task, health_of, offers
from contexten.exceptions import AgentNotFound, NoAgentAvailable

__all__ = ["RoutingRule", "TaskRouter"]


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """Send matching tasks to ``agent``.

    Attributes:
        agent: the agent's name.
        capability: a capability pattern the task must need (``code.*``), or ``None``.
        when: a predicate on the task (e.g. ``lambda t: t.metadata.get("team") == "infra"``).
        priority: higher rules are preferred.
    """

    agent: str
    capability: str | None = None
    when: Callable[[Task], bool] | None = None
    priority: int = 0

    def matches(self, task: Task) -> bool:
        """Whether this rule applies to ``task``."""
        if self.capability is not None and not fnmatchcase(task.needs, self.capability):
            return False
        return self.when is None or bool(self.when(task))


class TaskRouter:
    """Picks the agent for a task; see the module docstring.

    Args:
        rules: routing rules, in any order (priority decides).
    """

    def __init__(self, rules: list[RoutingRule] | None = None) -> None:
        self.rules: list[RoutingRule] = list(rules or [])

    def add_rule(self, rule: RoutingRule) -> None:
        """Add a rule."""
        self.rules.append(rule)

    def candidates(
        self,
        task: Task,
        agents: Mapping[str, Agent],
        load: Mapping[str, int] | None = None,
    ) -> list[tuple[Agent, AgentHealth]]:
        """Every agent that could take ``task``, best first, with its health."""
        load = load or {}
        order = {name: i for i, name in enumerate(agents)}
        ranked: dict[str, int] = {}
        for rule in self.rules:
            if rule.agent in agents and rule.matches(task):
                ranked[rule.agent] = max(ranked.get(rule.agent, rule.priority), rule.priority)
        for name, agent in agents.items():
            if name not in ranked and offers(agent, task.needs):
                ranked[name] = -(2**31)
        scored = [
            (agents[name], health_of(agents[name]), priority) for name, priority in ranked.items()
        ]
        scored.sort(
            key=lambda item: (
                not item[1].available,
                -item[2],
                load.get(item[0].name, 0),
                order[item[0].name],
            )
        )
        return [(agent, health) for agent, health, _ in scored]

    def select(
        self, task: Task, agents: Mapping[str, Agent], load: Mapping[str, int] | None = None
    ) -> Agent:
        """The agent that takes ``task``.

        Raises:
            AgentNotFound: the task is pinned to an agent that is not registered.
            NoAgentAvailable: no agent offers the capability, or none is healthy.
        """
        if task.agent is not None:
            if task.agent not in agents:
                raise AgentNotFound(f"no agent named {task.agent!r}")
            return agents[task.agent]
        candidates = self.candidates(task, agents, load)
        if not candidates:
            raise NoAgentAvailable(f"no agent offers {task.needs!r}")
        agent, health = candidates[0]
        if not health.available:
            reasons = "; ".join(h.detail or a.name for a, h in candidates)
            raise NoAgentAvailable(f"every agent for {task.needs!r} is unavailable ({reasons})")
        return agent
