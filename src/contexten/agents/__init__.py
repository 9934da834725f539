"""Agents: the agent protocol, the platform agents, the manager and the task router."""

from contexten.agents.base import Agent, AgentHealth, Task, offers
from contexten.agents.manager import AgentManager
from contexten.agents.platform import PlatformAgent, platform_agents
from contexten.agents.router import RoutingRule, TaskRouter

__all__ = [
    "Agent",
    "AgentHealth",
    "AgentManager",
    "PlatformAgent",
    "RoutingRule",
    "Task",
    "TaskRouter",
    "offers",
    "platform_agents",
]
