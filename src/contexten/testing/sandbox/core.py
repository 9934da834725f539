"""What the sandbox's four platform emulators share: configuration, ids, time, webhooks."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contexten.testing.sandbox.faults import Fault, FaultInjector
from contexten.testing.sandbox.webhooks import WebhookSender

__all__ = ["Core", "Emulator", "SandboxConfig", "bearer", "iso", "json_response"]

DEFAULT_SECRETS = {
    "github": "sandbox-github-secret",
    "linear": "sandbox-linear-secret",
    "slack": "sandbox-slack-secret",
}


def iso(ts: float | None = None) -> str:
    """An ISO-8601 UTC timestamp the way the platforms write them (``2024-05-01T12:00:00Z``)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class SandboxConfig:
    """How the sandbox behaves. Defaults suit tests and the demo.

    Attributes:
        webhook_url: base URL webhooks are posted to (``<url>/github``, ``/linear``,
            ``/slack``; Codegen sends none); ``None`` only records them in the outbox.
        secrets: webhook signing secret per platform.
        webhooks_for_api_calls: send the webhooks a real platform sends for changes made
            through its API (our own actions: what echo suppression must recognise).
        github_bot_login: the login API calls act as on GitHub.
        slack_bot_user: the bot's Slack user id; ``slack_bot_id`` its bot id.
        linear_bot_user: the Linear user API calls act as.
        agent_run_start_after: seconds from creating an agent run until it is running.
        agent_run_duration: seconds a run works before it finishes.
        github_rate_limit: requests per window per token (headers count down).
        rate_limit_window: the window's length in seconds (GitHub and Linear).
        linear_request_limit: Linear requests per window per key.
        linear_complexity_limit: Linear complexity points per window per key.
        codegen_org_id: the organisation id the Codegen API answers for.
        codegen_poll_interval: seconds between two reads of a run by the clients the sandbox
            hands out (``CONTEXTEN_CODEGEN_POLL_INTERVAL``).
        require_auth: refuse requests without credentials, as the platforms do.
    """

    webhook_url: str | None = None
    secrets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SECRETS))
    webhooks_for_api_calls: bool = True
    github_bot_login: str = "contexten-sandbox[bot]"
    slack_bot_user: str = "U0CONTEXTEN"
    slack_bot_id: str = "B0CONTEXTEN"
    linear_bot_user: str = "contexten-bot"
    agent_run_start_after: float = 0.5
    agent_run_duration: float = 2.0
    github_rate_limit: int = 5000
    rate_limit_window: float = 3600.0
    linear_request_limit: int = 5000
    linear_complexity_limit: int = 250_000
    codegen_org_id: int = 1
    codegen_poll_interval: float = 0.2
    require_auth: bool = True


class Core:
    """Shared by the emulators: config, id counters, time, faults, webhooks."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.faults = FaultInjector()
        self.webhooks = WebhookSender(config.webhook_url, config.secrets)
        self._ids = itertools.count(1_000_001)
        self._reserved: dict[tuple[str, str], Any] = {}
        self._taken: set[int] = set()
        self.started = time.time()

    def next_id(self) -> int:
        """A fresh numeric id, unique across the sandbox (never one that is reserved)."""
        while (value := next(self._ids)) in self._taken:
            pass
        return value

    def reserve(self, kind: str, key: str, value: Any) -> None:
        """Hand out ``value`` (an id, a number, a ``ts``) to the next object of ``kind``
        created with idempotency key ``key``, instead of a fresh one.

        Shadow replay reserves the ids the real platform gave the objects the recorded code
        made, so the new code's objects carry the ids that recorded webhooks name.
        """
        self._reserved[(kind, key)] = value
        if isinstance(value, int):
            self._taken.add(value)

    def claim(self, kind: str, key: str | None) -> Any:
        """The value reserved for ``(kind, key)`` (once), or None."""
        return None if key is None else self._reserved.pop((kind, key), None)

    def now(self) -> float:
        """Unix time."""
        return time.time()

    def window_reset(self) -> float:
        """Unix time at which the current rate-limit window ends."""
        window = self.config.rate_limit_window
        elapsed = (self.now() - self.started) % window
        return self.now() + (window - elapsed)


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` (or ``token ...``) header."""
    value = request.headers.get("authorization", "")
    for prefix in ("Bearer ", "bearer ", "token "):
        if value.startswith(prefix):
            return value[len(prefix) :].strip() or None
    return None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return JSONResponse(body, status_code=status, headers=headers)


class Emulator:
    """Base of the four platform emulators."""

    platform = ""

    def __init__(self, core: Core) -> None:
        self.core = core

    def fault_key(self, path: str, body: bytes) -> str:
        """What a fault's ``path`` is matched against (default: the path in the platform)."""
        return path

    def fault_response(self, fault: Fault) -> Response:
        """The platform's answer for an injected ``rate_limit`` or ``status`` fault."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state."""
        raise NotImplementedError
