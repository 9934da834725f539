"""The agent contract: what an agent is, what a task is.

An :class:`Agent` is anything with a ``name``, a set of ``capabilities`` and an async
``execute(task)``; it may also report ``health()`` (the router skips unhealthy agents). The
four platform agents wrap the platform actions; users register their own (a local LLM, a
deploy bot) the same way.

Capabilities are dotted names (``slack.post_message``, ``code.implement``); an agent may
declare patterns with ``*`` (``github.*``) and a task asks for one concrete capability.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

__all__ = ["Agent", "AgentHealth", "Task", "offers"]


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work for an agent.

    Attributes:
        action: what to do (for platform agents, an action's name: ``post_message``).
        args: positional arguments for the action.
        kwargs: keyword arguments for the action.
        capability: the capability needed (default: ``action``); the router matches it.
        agent: pin the task to the agent of that name (skips routing).
        idempotency_key: passed on to mutating actions.
        metadata: free-form routing hints (team, priority, repository...), read by rules.
    """

    action: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    capability: str | None = None
    agent: str | None = None
    idempotency_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs(self) -> str:
        """The capability the task needs."""
        return self.capability or self.action


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """Whether an agent can take work now, and why not.

    Attributes:
        available: false while the agent cannot serve (its breaker is open...).
        detail: a short reason for humans.
        retry_after: seconds until it may be available again (0 if unknown or available).
    """

    available: bool = True
    detail: str = ""
    retry_after: float = 0.0


@runtime_checkable
class Agent(Protocol):
    """The agent contract; see the module docstring."""

    name: str
    capabilities: frozenset[str]

    async def execute(self, task: Task) -> Any:
        """Do ``task`` and return its result."""


def offers(agent: Agent, capability: str) -> bool:
    """Whether ``agent`` declares ``capability`` (its patterns may use ``*``)."""
    return any(fnmatchcase(capability, pattern) for pattern in agent.capabilities)


def health_of(agent: Agent) -> AgentHealth:
    """The agent's health, or "available" for agents that do not report one."""
    report = getattr(agent, "health", None)
    if callable(report):
        value = report()
        if isinstance(value, AgentHealth):
            return value
    return AgentHealth()
