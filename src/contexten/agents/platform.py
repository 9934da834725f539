"""The four platform agents: GitHub, Linear, Slack and Codegen, as :class:`Agent` s.

A :class:`PlatformAgent` exposes its platform's actions bound to its client, so handlers write
``await ctx.agents.slack.post_message(channel="C1", text="hi")``, and executes
:class:`~contexten.agents.base.Task` s naming those actions. Its health is its client's
circuit breaker: while the breaker is open the router looks elsewhere.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from contexten.agents.base import AgentHealth, Task
from contexten.exceptions import AgentError
from contexten.integrations import codegen, github, linear, slack
from contexten.integrations.client import ClientRegistry, PlatformClient, current_clients

__all__ = ["PlatformAgent", "platform_agents"]

_EXTRA_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "github": ("vcs.*", "review.*"),
    "linear": ("issues.*",),
    "slack": ("chat.*", "approval.*"),
    "codegen": ("code.*",),
}


class PlatformAgent:
    """One platform's actions as an agent.

    Args:
        name: the agent's name (``github``...).
        module: the platform's actions module.
        client_type: the platform's client class.
        clients: where the client comes from (default: the registry in force at call time).
        capabilities: extra capability patterns besides ``<name>.<action>``.
    """

    def __init__(
        self,
        name: str,
        module: ModuleType,
        client_type: type[PlatformClient],
        clients: ClientRegistry | None = None,
        capabilities: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self._module = module
        self._client_type = client_type
        self._clients = clients
        self.actions: dict[str, Callable[..., Any]] = {
            attr: getattr(module, attr)
            for attr in getattr(module, "__all__", ())
            if callable(getattr(module, attr)) and not inspect.isclass(getattr(module, attr))
        }
        self.capabilities = frozenset(
            {f"{name}.{action}" for action in self.actions} | set(capabilities)
        )

    @property
    def client(self) -> PlatformClient:
        """The client the agent acts through."""
        registry = self._clients if self._clients is not None else current_clients()
        return registry.get(self._client_type)

    def health(self) -> AgentHealth:
        """Unavailable while the client's circuit breaker is open."""
        registry = self._clients if self._clients is not None else current_clients()
        client = registry.clients().get(self._client_type.platform)
        if client is None:
            return AgentHealth()  # not used yet: nothing says it is unwell
        breaker = client.health().breaker
        if breaker.available:
            return AgentHealth()
        return AgentHealth(
            available=False,
            detail=f"{self.name} circuit breaker is open",
            retry_after=breaker.retry_after,
        )

    def _bound(self, action: str) -> Callable[..., Any]:
        fn = self.actions.get(action)
        if fn is None:
            raise AgentError(f"agent {self.name!r} has no action {action!r}")
        if "client" in inspect.signature(fn).parameters:
            return functools.partial(fn, client=self.client)
        return fn

    def __getattr__(self, action: str) -> Callable[..., Any]:
        if action.startswith("_"):
            raise AttributeError(action)
        try:
            return self._bound(action)
        except AgentError as error:
            raise AttributeError(str(error)) from None

    async def execute(self, task: Task) -> Any:
        """Run the action ``task.action`` with the task's arguments."""
        kwargs = dict(task.kwargs)
        fn = self._bound(task.action)
        if (
            task.idempotency_key is not None
            and "idempotency_key" in inspect.signature(self.actions[task.action]).parameters
        ):
            kwargs.setdefault("idempotency_key", task.idempotency_key)
        return await fn(*task.args, **kwargs)

    def __repr__(self) -> str:
        return f"<PlatformAgent {self.name}: {len(self.actions)} actions>"


def platform_agents(clients: ClientRegistry | None = None) -> list[PlatformAgent]:
    """The GitHub, Linear, Slack and Codegen agents, acting through ``clients``."""
    specs: list[tuple[str, ModuleType, type[PlatformClient]]] = [
        ("github", github.actions, github.GitHubClient),
        ("linear", linear.actions, linear.LinearClient),
        ("slack", slack.actions, slack.SlackClient),
        ("codegen", codegen.actions, codegen.CodegenClient),
    ]
    return [
        PlatformAgent(name, module, client_type, clients, _EXTRA_CAPABILITIES[name])
        for name, module, client_type in specs
    ]
