"""The ingress's configuration: webhook secrets (rotatable), body caps, tolerances, deadlines.

Secrets come from the environment:

=====================================  ==========================================
variable                               secret
=====================================  ==========================================
``CONTEXTEN_GITHUB_WEBHOOK_SECRET``    GitHub webhook secret
``CONTEXTEN_LINEAR_WEBHOOK_SECRET``    Linear webhook signing secret
``CONTEXTEN_SLACK_SIGNING_SECRET``     Slack app signing secret
``CONTEXTEN_LINEAR_TEAM_KEYS``         (not a secret) Linear team keys, for correlation
``CONTEXTEN_ADMIN_TOKEN``              an admin API token that lives only here
``CONTEXTEN_ALLOWED_HOSTS``            (not a secret) the ``Host`` names served
=====================================  ==========================================

Each secret variable may hold two secrets separated by a comma, so a secret can be rotated
without downtime: add the new one beside the old, change it on the platform, remove the old.
A platform with no secret refuses every request (it never accepts unsigned input).

Secrets are kept as bytes, out of ``repr()`` and out of every error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from contexten.clock import Clock, WallClock
from contexten.exceptions import ConfigurationError
from contexten.ingress.body import MiB
from contexten.security.hosts import ENV_ALLOWED_HOSTS, LOOPBACK_HOSTS, default_allowed_hosts
from contexten.security.tokens import ENV_ADMIN_TOKEN

__all__ = ["ENV_SECRETS", "IngressConfig", "Platform", "parse_secrets"]

Platform = Literal["github", "linear", "slack"]

ENV_SECRETS: Final[Mapping[Platform, str]] = {
    "github": "CONTEXTEN_GITHUB_WEBHOOK_SECRET",
    "linear": "CONTEXTEN_LINEAR_WEBHOOK_SECRET",
    "slack": "CONTEXTEN_SLACK_SIGNING_SECRET",
}
_ENV_TEAM_KEYS: Final = "CONTEXTEN_LINEAR_TEAM_KEYS"
_MAX_SECRETS: Final = 2


def parse_secrets(value: str | None, *, name: str = "secret") -> tuple[bytes, ...]:
    """Split a comma-separated secret variable into at most two secrets (blanks dropped).

    Raises:
        ConfigurationError: more than two secrets (the message never shows them).
    """
    if not value:
        return ()
    secrets = tuple(part.strip().encode("utf-8") for part in value.split(",") if part.strip())
    if len(secrets) > _MAX_SECRETS:
        raise ConfigurationError(
            f"{name} holds {len(secrets)} comma-separated secrets; at most {_MAX_SECRETS} "
            "(the current one and the one being rotated out)"
        )
    return secrets


@dataclass(frozen=True, slots=True)
class IngressConfig:
    """How the ingress verifies and bounds webhook requests.

    Attributes:
        github_secrets: GitHub webhook secrets (one, or two while rotating).
        linear_secrets: Linear signing secrets.
        slack_secrets: Slack signing secrets.
        github_max_body: GitHub body cap in bytes (GitHub caps its payloads at 25 MB).
        linear_max_body: Linear body cap.
        slack_max_body: Slack body cap.
        slack_tolerance: seconds a Slack request timestamp may be from now.
        linear_tolerance: seconds a Linear ``webhookTimestamp`` may be from now.
        body_timeout: seconds a client gets to send the whole body.
        clock: where "now" comes from for the timestamp checks.
        team_keys: Linear team keys; when set, only they count as work-item identifiers.
        offload_threshold: bodies larger than this are verified and parsed in a worker thread,
            so the event loop keeps answering other requests meanwhile.
        max_pending_commits: load shedding: when this many webhook requests already wait on
            the store's write path, further ones are answered 429 at once (before their body
            is read) instead of queueing without bound. The default is far above what one
            store's group commit has in flight at 1,000 concurrent connections, so it only
            bites when the store falls behind.
        retry_after: seconds a shed (429) or store-down (503) answer asks the client to wait
            (``Retry-After``).
        allowed_hosts: the ``Host`` names every route but the webhooks answers to (DNS
            rebinding); ``*.example.com`` matches subdomains, ``*`` anything.
        metrics_public: serve ``/metrics`` without a token (a scraper on a private network);
            by default it needs the ``viewer`` role.
        admin_token: an admin API token from the environment (``CONTEXTEN_ADMIN_TOKEN``), on
            top of the tokens in the store; never in ``repr()``.
        auth_failure_limit: authentication failures one client address may make per
            ``auth_failure_window`` before it is answered 429 (0: unlimited).
        auth_failure_window: that window, in seconds.
        token_refresh: seconds a process trusts its cached view of the tokens: a token
            revoked elsewhere is refused here within this long.
        large_body_budget: bytes of large bodies (over ``offload_threshold``) held in memory at
            once, across requests, from reading through verification and parsing. Further
            large bodies wait their turn (their senders are paused by TCP flow control), up
            to the platform's commit deadline, then get 429. Bounds memory when many unsigned
            24 MB bodies arrive at once; small webhooks never wait for it.
        keep_alive_timeout: seconds a connection may stay open without sending a request.
        header_timeout: seconds a client gets to send a request's complete headers (else 408
            and close: slowloris).
        max_header_bytes: largest request header section accepted (else 431 and close).
        max_connections: most connections open at once; beyond it a new connection evicts
            the one waiting longest for its headers, or is refused (503) when all are busy
            (see :mod:`contexten.ingress.frontdoor`).
        slack_deadline: seconds Slack waits for an answer before it gives up and retries.
        linear_deadline: seconds Linear waits.
        github_deadline: seconds GitHub waits.
        deadline_margin: seconds kept in hand under each platform's deadline (network, the
            answer's way back). A webhook not committed within ``deadline - margin`` of its
            request's start is answered 503 with ``Retry-After``; a commit that still lands
            later makes the platform's retry a duplicate (its dedup key), so nothing is lost
            or doubled.
        publish_max_body: largest CloudEvent accepted by ``POST /api/v1/events`` (bytes of
            the body, structured or binary mode; else 413).
        stream_seconds: how long one ``GET /api/v1/events/stream`` connection lasts; the
            client then reconnects with ``Last-Event-ID`` and misses nothing.
        stream_heartbeat: seconds between keep-alive comments on a quiet event stream.
    """

    github_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    linear_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    slack_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    github_max_body: int = 25 * MiB
    linear_max_body: int = 1 * MiB
    slack_max_body: int = 1 * MiB
    slack_tolerance: float = 300.0
    linear_tolerance: float = 60.0
    body_timeout: float = 30.0
    clock: Clock = field(default_factory=WallClock)
    team_keys: frozenset[str] = frozenset()
    offload_threshold: int = 1 * MiB
    max_pending_commits: int = 2048
    retry_after: int = 1
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    metrics_public: bool = False
    admin_token: str | None = field(default=None, repr=False)
    auth_failure_limit: int = 10
    auth_failure_window: float = 60.0
    token_refresh: float = 1.0
    large_body_budget: int = 25 * MiB
    keep_alive_timeout: int = 5
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 4096
    slack_deadline: float = 3.0
    linear_deadline: float = 5.0
    github_deadline: float = 10.0
    deadline_margin: float = 1.0
    publish_max_body: int = 256 * 1024
    stream_seconds: float = 300.0
    stream_heartbeat: float = 15.0

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        bind_host: str | None = None,
        **overrides: object,
    ) -> IngressConfig:
        """Read the secrets, team keys, admin token and allowed hosts from ``env``
        (default: ``os.environ``).

        ``bind_host`` (the address served on) joins the default allowed hosts when
        ``CONTEXTEN_ALLOWED_HOSTS`` is not set. Keyword ``overrides`` set any other attribute
        (``clock=...``, ``body_timeout=...``).

        Raises:
            ConfigurationError: a variable holds more than two secrets.
        """
        env = os.environ if env is None else env
        secrets = {
            f"{platform}_secrets": parse_secrets(env.get(var), name=var)
            for platform, var in ENV_SECRETS.items()
        }
        team_keys = frozenset(
            k.strip().upper() for k in env.get(_ENV_TEAM_KEYS, "").split(",") if k.strip()
        )
        hosts = [h.strip() for h in env.get(ENV_ALLOWED_HOSTS, "").split(",") if h.strip()]
        fields: dict[str, object] = {
            **secrets,
            "team_keys": team_keys,
            "allowed_hosts": tuple(hosts) or default_allowed_hosts(bind_host),
            "admin_token": env.get(ENV_ADMIN_TOKEN) or None,
        }
        return cls(**{**fields, **overrides})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.max_pending_commits < 1:
            raise ConfigurationError("max_pending_commits must be at least 1")
        if self.retry_after < 0:
            raise ConfigurationError("retry_after must be >= 0 seconds")
        if self.auth_failure_limit < 0:
            raise ConfigurationError("auth_failure_limit must be >= 0")
        if self.large_body_budget < 1 or self.max_header_bytes < 1024:
            raise ConfigurationError(
                "large_body_budget must be positive and max_header_bytes at least 1024"
            )
        if self.keep_alive_timeout < 1 or self.header_timeout <= 0:
            raise ConfigurationError("keep_alive_timeout and header_timeout must be positive")
        if self.max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        for platform in ENV_SECRETS:
            if self.commit_deadline(platform) <= 0:
                raise ConfigurationError(
                    f"{platform}_deadline must exceed deadline_margin ({self.deadline_margin} s)"
                )

    def secrets(self, platform: Platform) -> tuple[bytes, ...]:
        """The secrets configured for ``platform`` (empty: it refuses everything)."""
        return {
            "github": self.github_secrets,
            "linear": self.linear_secrets,
            "slack": self.slack_secrets,
        }[platform]

    def max_body(self, platform: Platform) -> int:
        """The body cap of ``platform``'s webhook route, in bytes."""
        return {
            "github": self.github_max_body,
            "linear": self.linear_max_body,
            "slack": self.slack_max_body,
        }[platform]

    def commit_deadline(self, platform: Platform) -> float:
        """Seconds from a ``platform`` request's start within which it must be committed.

        The platform's own deadline minus :attr:`deadline_margin`; past it the ingress
        answers 503 so the platform retries, instead of answering after it gave up.
        """
        deadline = {
            "github": self.github_deadline,
            "linear": self.linear_deadline,
            "slack": self.slack_deadline,
        }[platform]
        return deadline - self.deadline_margin

    def __repr__(self) -> str:
        configured = [p for p in ENV_SECRETS if self.secrets(p)]
        return (
            f"IngressConfig(secrets configured for {configured}, "
            f"caps github={self.github_max_body} linear={self.linear_max_body} "
            f"slack={self.slack_max_body})"
        )
