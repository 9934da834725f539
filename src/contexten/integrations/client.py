"""The common base of the four platform clients, and the registry that pools them.

Each platform client (:class:`~contexten.integrations.github.GitHubClient` and friends) is a
:class:`PlatformClient`: it owns one :class:`~contexten.integrations.http.PlatformHTTP` (one
connection pool, breaker and rate limiter) for one credential, reads its credential and base
URL from the environment, and takes an injected transport for tests.

:class:`ClientRegistry` holds one client per platform, created on first use from the
environment. Module-level actions (``github.create_issue_comment(...)``) use the registry in
force (:func:`use_clients`), so handlers and workflow steps need not pass clients around.

Environment (per platform ``P`` in ``GITHUB``, ``LINEAR``, ``SLACK``, ``CODEGEN``):
``CONTEXTEN_<P>_BASE_URL`` overrides the API root; the credential is
``CONTEXTEN_GITHUB_TOKEN``, ``CONTEXTEN_LINEAR_API_KEY``, ``CONTEXTEN_SLACK_BOT_TOKEN`` or
``CONTEXTEN_CODEGEN_TOKEN`` (plus ``CONTEXTEN_CODEGEN_ORG_ID``). ``CONTEXTEN_SANDBOX_URL``
points every platform without its own base URL at the local sandbox.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Self, TypeVar, cast

import httpx

from contexten.clock import Clock
from contexten.exceptions import ConfigurationError, PlatformError
from contexten.integrations.http import HTTPSettings, PlatformAdapter, PlatformHealth, PlatformHTTP
from contexten.integrations.idempotency import RecentResults
from contexten.integrations.ssrf import Resolver

__all__ = [
    "ClientRegistry",
    "PlatformClient",
    "current_clients",
    "set_default_clients",
    "use_clients",
]

C = TypeVar("C", bound="PlatformClient")
T = TypeVar("T")


class PlatformClient:
    """Base of the platform clients: one credential, one pool, one breaker.

    Args:
        settings: full settings; or build them from ``base_url``/``token`` and defaults.
        base_url: the API root (default: the platform's public API).
        token: the credential.
        transport: an httpx transport (tests: ``httpx.ASGITransport`` into the sandbox).
        clock: the clock waits and backoff use.
        rng: randomness for backoff jitter.
        resolver: name resolution for the SSRF guard.
        **overrides: any other :class:`~contexten.integrations.http.HTTPSettings` field.
    """

    platform: ClassVar[str] = ""
    token_env: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    sandbox_path: ClassVar[str] = ""
    extra_hosts: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        settings: HTTPSettings | None = None,
        *,
        base_url: str | None = None,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        resolver: Resolver | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = HTTPSettings(
                base_url=base_url or self.default_base_url,
                token=token,
                allowed_hosts=self.extra_hosts,
                **overrides,
            )
        elif base_url is not None or token is not None or overrides:
            settings = dataclasses.replace(
                settings,
                base_url=base_url or settings.base_url,
                token=token if token is not None else settings.token,
                **overrides,
            )
        self.settings = settings
        self.http = PlatformHTTP(
            self._adapter(), settings, transport=transport, clock=clock, rng=rng, resolver=resolver
        )
        self.recent = RecentResults()

    def _adapter(self) -> PlatformAdapter:
        raise NotImplementedError

    async def create_once(
        self,
        scope: str,
        idempotency_key: str | None,
        lookup: Callable[[], Awaitable[T | None]],
        create: Callable[[], Awaitable[T]],
    ) -> T:
        """Create an object at most once per idempotency key.

        With a key: return what this process made for the key recently, else what ``lookup``
        finds on the platform, else ``create`` it. A create whose outcome is unknown (the
        response was lost: the error is ``maybe_applied``) is retried under the client's
        retry policy, looking up again first, so it never makes a second object. Without a
        key the create runs once, and an unknown outcome is raised.
        """
        if idempotency_key is not None:
            known = self.recent.get(scope, idempotency_key)
            if known is not None:
                return cast(T, known)
        policy = self.settings.retry
        attempt = 0
        while True:
            if idempotency_key is not None:
                found = await lookup()
                if found is not None:
                    self.recent.put(scope, idempotency_key, found)
                    return found
            try:
                result = await create()
            except PlatformError as error:
                attempt += 1
                if (
                    idempotency_key is None
                    or not error.maybe_applied
                    or not policy.should_retry(attempt, error)
                ):
                    raise
                await self.http.clock.sleep(policy.delay(attempt))
                continue
            self.recent.put(scope, idempotency_key, result)
            return result

    @classmethod
    def settings_from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """Constructor keywords read from the environment (base URL and credential)."""
        env = os.environ if env is None else env
        prefix = f"CONTEXTEN_{cls.platform.upper()}"
        base_url = env.get(f"{prefix}_BASE_URL")
        if not base_url and env.get("CONTEXTEN_SANDBOX_URL"):
            base_url = env["CONTEXTEN_SANDBOX_URL"].rstrip("/") + cls.sandbox_path
        kwargs: dict[str, Any] = {
            "base_url": base_url or cls.default_base_url,
            "token": env.get(cls.token_env) or None,
        }
        kwargs.update(overrides)
        return kwargs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """A client configured from the environment (see the module docstring)."""
        return cls(**cls.settings_from_env(env, **overrides))

    def health(self) -> PlatformHealth:
        """Breaker state, rate-limit budgets and open connections, for ``/readyz``."""
        return self.http.health()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ClientRegistry:
    """One client per platform, created from the environment on first use.

    Args:
        env: where settings come from (default: ``os.environ``).
        transport: a transport every client created here sends through (tests, sandbox).
        clock: the clock every client created here waits on.
        **overrides: :class:`~contexten.integrations.http.HTTPSettings` fields for every client.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> None:
        self._env = env
        self._transport = transport
        self._clock = clock
        self._overrides = overrides
        self._clients: dict[str, PlatformClient] = {}

    def register(self, client: PlatformClient) -> None:
        """Use ``client`` for its platform (replacing one created from the environment)."""
        self._clients[client.platform] = client

    def get(self, cls: type[C]) -> C:
        """The client for ``cls``'s platform, created on first use."""
        client = self._clients.get(cls.platform)
        if client is None:
            extra: dict[str, Any] = dict(self._overrides)
            if self._transport is not None:
                extra["transport"] = self._transport
            if self._clock is not None:
                extra["clock"] = self._clock
            client = cls.from_env(self._env, **extra)
            self._clients[cls.platform] = client
        if not isinstance(client, cls):
            raise ConfigurationError(
                f"the {cls.platform} client registered is a {type(client).__name__}, "
                f"not a {cls.__name__}"
            )
        return client

    def clients(self) -> dict[str, PlatformClient]:
        """The clients created so far, by platform."""
        return dict(self._clients)

    def health(self) -> dict[str, PlatformHealth]:
        """Each created client's health, by platform."""
        return {name: client.health() for name, client in self._clients.items()}

    async def aclose(self) -> None:
        """Close every client's pool."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_default: ClientRegistry | None = None
_current: contextvars.ContextVar[ClientRegistry | None] = contextvars.ContextVar(
    "contexten_clients", default=None
)


def current_clients() -> ClientRegistry:
    """The registry in force: the innermost :func:`use_clients`, else the process default."""
    global _default
    registry = _current.get()
    if registry is not None:
        return registry
    if _default is None:
        _default = ClientRegistry()
    return _default


def set_default_clients(registry: ClientRegistry | None) -> None:
    """Make ``registry`` the process default (the App does this when it starts)."""
    global _default
    _default = registry


@contextmanager
def use_clients(registry: ClientRegistry) -> Iterator[ClientRegistry]:
    """Use ``registry`` for actions called inside the block (in this task and its children)."""
    token = _current.set(registry)
    try:
        yield registry
    finally:
        _current.reset(token)
