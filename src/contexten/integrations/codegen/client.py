"""Codegen agent API client: create an agent run, read it, list runs, stop it.

Endpoints (``https://api.codegen.com``): ``POST /v1/organizations/{org_id}/agent/run``,
``GET /v1/organizations/{org_id}/agent/run/{agent_run_id}``,
``GET /v1/organizations/{org_id}/agent/runs``, ``POST .../agent/run/resume`` and
``POST .../agent/run/ban`` (stops the run's agents: our cancel). The API documents its limits
(agent creation 10 per minute, other endpoints 60 per 30 s) and answers 429 past them; creation
is also paced client-side so a burst of workflows queues instead of collecting 429s.

Codegen's API reference documents no idempotency header, so a create carries its key in the
run's ``metadata`` (``contexten_idempotency_key``), which a retry looks for among the latest
runs before creating another. Nor does it document webhooks: a run's progress is read by
polling ``GET .../agent/run/{id}`` (see :class:`~contexten.integrations.codegen.AgentRunPoller`
and the App's agent-run watcher), every ``poll_interval`` seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from contexten.exceptions import ConfigurationError, PlatformRequestError
from contexten.integrations.client import PlatformClient
from contexten.integrations.http import PlatformAdapter
from contexten.resilience.rate_limit import TokenBucket

__all__ = ["TERMINAL_STATUSES", "CodegenAdapter", "CodegenClient"]

JSON = dict[str, Any]

TERMINAL_STATUSES = frozenset({"completed", "complete", "failed", "error", "cancelled", "stopped"})
"""Run statuses (lower-cased) after which a run no longer changes."""

_LOOKUP_LIMIT = 50


class CodegenAdapter(PlatformAdapter):
    """Codegen's bearer auth and per-endpoint budgets."""

    platform = "codegen"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def bucket(self, method: str, url: httpx.URL) -> str:
        return "create" if method == "POST" and url.path.endswith("/agent/run") else "standard"


class CodegenClient(PlatformClient):
    """The Codegen agent API for one token and organisation.

    Args:
        org_id: the organisation (default: ``CONTEXTEN_CODEGEN_ORG_ID``).
        create_rate: agent runs per second created at most (default: the API's 10/minute).
        poll_interval: seconds between two reads of a run being watched (default:
            ``CONTEXTEN_CODEGEN_POLL_INTERVAL``, else 15).
        *args: see :class:`~contexten.integrations.client.PlatformClient`.
        **kwargs: see :class:`~contexten.integrations.client.PlatformClient`.
    """

    platform: ClassVar[str] = "codegen"
    token_env: ClassVar[str] = "CONTEXTEN_CODEGEN_TOKEN"
    default_base_url: ClassVar[str] = "https://api.codegen.com"
    sandbox_path: ClassVar[str] = "/codegen"

    def __init__(
        self,
        *args: Any,
        org_id: int | str | None = None,
        create_rate: float | None = 10 / 60,
        poll_interval: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        interval = float(poll_interval) if poll_interval not in (None, "") else 15.0
        if not interval > 0:
            raise ConfigurationError("the Codegen poll interval must be a positive number")
        self.poll_interval = interval
        org = org_id if org_id is not None else os.environ.get("CONTEXTEN_CODEGEN_ORG_ID")
        if org is None or str(org).strip() == "":
            raise ConfigurationError(
                "the Codegen client needs an organisation id (CONTEXTEN_CODEGEN_ORG_ID)"
            )
        self.org_id = str(org).strip()
        self._create_pace = (
            TokenBucket(create_rate, burst=10, clock=self.http.clock, name="codegen create")
            if create_rate
            else None
        )

    @classmethod
    def settings_from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        kwargs = super().settings_from_env(env, **overrides)
        env = os.environ if env is None else env
        kwargs.setdefault("org_id", env.get("CONTEXTEN_CODEGEN_ORG_ID"))
        kwargs.setdefault("poll_interval", env.get("CONTEXTEN_CODEGEN_POLL_INTERVAL"))
        return kwargs

    def _adapter(self) -> PlatformAdapter:
        return CodegenAdapter()

    def _path(self, tail: str) -> str:
        return f"/v1/organizations/{self.org_id}/{tail}"

    async def _json(self, method: str, tail: str, **kwargs: Any) -> JSON:
        response = await self.http.request(method, self._path(tail), **kwargs)
        body: JSON = response.json()
        return body

    async def create_agent_run(
        self,
        prompt: str,
        *,
        repo_id: int | None = None,
        metadata: JSON | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Start an agent run (once per idempotency key); returns the run."""
        meta = dict(metadata or {})
        if idempotency_key is not None:
            meta["contexten_idempotency_key"] = idempotency_key
        payload: JSON = {"prompt": prompt}
        if meta:
            payload["metadata"] = meta
        if repo_id is not None:
            payload["repo_id"] = repo_id
        if model is not None:
            payload["model"] = model

        async def lookup() -> JSON | None:
            page = await self.list_agent_runs(limit=_LOOKUP_LIMIT)
            for run in page.get("items", []):
                if (run.get("metadata") or {}).get("contexten_idempotency_key") == idempotency_key:
                    return dict(run)
            return None

        async def create() -> JSON:
            if self._create_pace is not None:
                await self._create_pace.acquire()
            return await self._json(
                "POST",
                "agent/run",
                json=payload,
                # Not replayed blindly: Codegen has no idempotency header, so a create whose
                # response was lost is retried by create_once, after looking for the run.
                replay_safe=False,
            )

        return await self.create_once("codegen:run", idempotency_key, lookup, create)

    async def get_agent_run(self, agent_run_id: int | str) -> JSON:
        """One run: status, result, pull requests."""
        return await self._json("GET", f"agent/run/{agent_run_id}")

    async def list_agent_runs(self, *, limit: int = 20, skip: int = 0) -> JSON:
        """The organisation's runs, newest first (``{"items": [...], "total": ...}``)."""
        return await self._json("GET", "agent/runs", params={"limit": limit, "skip": skip})

    async def cancel_agent_run(self, agent_run_id: int | str) -> JSON:
        """Stop a run's agents (Codegen's ``agent/run/ban``); a finished run is left as is."""
        current = await self.get_agent_run(agent_run_id)
        if str(current.get("status") or "").lower() in TERMINAL_STATUSES:
            return current
        try:
            await self._json(
                "POST",
                "agent/run/ban",
                json={"agent_run_id": int(agent_run_id)},
                replay_safe=True,
            )
        except PlatformRequestError:
            latest = await self.get_agent_run(agent_run_id)
            if str(latest.get("status") or "").lower() in TERMINAL_STATUSES:
                return latest
            raise
        return await self.get_agent_run(agent_run_id)

    async def resume_agent_run(self, agent_run_id: int | str, prompt: str) -> JSON:
        """Continue a run with a follow-up prompt."""
        return await self._json(
            "POST", "agent/run/resume", json={"agent_run_id": int(agent_run_id), "prompt": prompt}
        )
