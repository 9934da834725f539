"""Codegen actions: start, read and cancel agent runs; turn run updates into events.

``create_agent_run`` is a workflow step whose compensation cancels the run::

    run = await wf.step(codegen.create_agent_run, prompt=title, repo="acme/api",
                        compensate=codegen.create_agent_run.undo)

Run updates become ``codegen.agent_run.<created|started|completed|failed|cancelled>`` events by
polling, the way Codegen's API reference describes following a run (it documents no
webhooks): :class:`AgentRunPoller` reads the runs it tracks and yields an event for each status
change; the App's watcher (:mod:`contexten.agents.codegen_runs`) does so durably for every run
its actions started. Each event carries a delivery id derived from the run and its status, so
appending them with that dedup key stores each transition once, however often it was seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from contexten.events import Event
from contexten.integrations.action import action
from contexten.integrations.client import current_clients
from contexten.integrations.codegen.client import TERMINAL_STATUSES, CodegenClient

__all__ = [
    "STATUS_EVENT_ACTIONS",
    "AgentRunPoller",
    "agent_run_event",
    "cancel_agent_run",
    "create_agent_run",
    "get_agent_run",
]

JSON = dict[str, Any]

STATUS_EVENT_ACTIONS: dict[str, str] = {
    "queued": "created",
    "pending": "created",
    "running": "started",
    "active": "started",
    "completed": "completed",
    "complete": "completed",
    "failed": "failed",
    "error": "failed",
    "cancelled": "cancelled",
    "stopped": "cancelled",
}
"""A run status (lower-cased) to the action in its event type."""


def _client(client: CodegenClient | None) -> CodegenClient:
    return client if client is not None else current_clients().get(CodegenClient)


def _fingerprint(result: Any) -> list[str]:
    if isinstance(result, dict) and result.get("id") is not None:
        return [f"codegen:run:{result['id']}"]
    return []


@action(platform="codegen", fingerprint=_fingerprint)
async def create_agent_run(
    prompt: str,
    *,
    repo: str | None = None,
    repo_id: int | None = None,
    metadata: JSON | None = None,
    model: str | None = None,
    idempotency_key: str | None = None,
    client: CodegenClient | None = None,
) -> JSON:
    """Start an agent run on ``prompt`` (``repo`` as ``"owner/name"`` goes in its metadata).

    Undo: cancel the run (a finished run is left as it is).
    """
    meta = dict(metadata or {})
    if repo is not None:
        meta.setdefault("repo", repo)
    return await _client(client).create_agent_run(
        prompt,
        repo_id=repo_id,
        metadata=meta or None,
        model=model,
        idempotency_key=idempotency_key,
    )


@create_agent_run.compensation
async def _cancel_created_run(
    *args: Any, result: Any = None, client: CodegenClient | None = None, **_: Any
) -> JSON:
    if not isinstance(result, dict) or result.get("id") is None:
        raise ValueError("this compensation needs the step's result (the agent run)")
    return await _client(client).cancel_agent_run(result["id"])


@action(platform="codegen", fingerprint=_fingerprint)
async def cancel_agent_run(
    agent_run_id: int | str,
    *,
    idempotency_key: str | None = None,
    client: CodegenClient | None = None,
) -> JSON:
    """Stop a run. It cannot be undone (``cancel_agent_run.undo`` is ``None``)."""
    return await _client(client).cancel_agent_run(agent_run_id)


async def get_agent_run(agent_run_id: int | str, *, client: CodegenClient | None = None) -> JSON:
    """One run: status, result, pull requests."""
    return await _client(client).get_agent_run(agent_run_id)


def agent_run_event(run: JSON, *, correlation_id: str | None = None) -> Event:
    """The ``codegen.agent_run.*`` event for ``run`` in its current status.

    The correlation id defaults to the run's ``metadata.correlation_id``; the delivery id is
    ``codegen:<run id>:<status>`` (one event per transition).
    """
    status = str(run.get("status") or "queued").lower()
    event_action = STATUS_EVENT_ACTIONS.get(status, status.replace("-", "_"))
    metadata = run.get("metadata") or {}
    return Event(
        type=f"codegen.agent_run.{event_action}",
        source="codegen",
        subject=f"agent_run/{run['id']}",
        data=dict(run),
        correlation_id=correlation_id or metadata.get("correlation_id"),
        delivery_id=f"codegen:{run['id']}:{status}",
        actor="codegen",
    )


class AgentRunPoller:
    """Polls runs until they finish, yielding an event for each status change it sees.

    Keep it small: poll the runs your workflows wait on (``track``), at the API's pace. The
    events are deduplicated by delivery id downstream, so restarting a poller (which re-emits
    the current status) stores nothing twice.

    Args:
        client: the Codegen client (default: the registry's).
    """

    def __init__(self, client: CodegenClient | None = None) -> None:
        self._client = client
        self._seen: dict[str, str] = {}
        self._correlation: dict[str, str | None] = {}

    def track(
        self,
        agent_run_ids: Iterable[int | str],
        *,
        status: str = "",
        correlation_id: str | None = None,
    ) -> None:
        """Watch these runs (again).

        Args:
            agent_run_ids: the runs.
            status: the status last reported for them (no event until it changes).
            correlation_id: the work item their events belong to (default: the run's
                ``metadata.correlation_id``).
        """
        for run_id in agent_run_ids:
            key = str(run_id)
            self._seen.setdefault(key, status.lower())
            if correlation_id is not None:
                self._correlation[key] = correlation_id

    @property
    def tracked(self) -> list[str]:
        """Runs still being watched."""
        return list(self._seen)

    async def poll_run(self, agent_run_id: int | str) -> list[Event]:
        """Read one tracked run; its event if its status changed (``[]`` otherwise).

        A run that reached a terminal status is no longer tracked.
        """
        run_id = str(agent_run_id)
        last = self._seen.get(run_id, "")
        run = await _client(self._client).get_agent_run(run_id)
        status = str(run.get("status") or "").lower()
        events: list[Event] = []
        if status != last:
            events.append(agent_run_event(run, correlation_id=self._correlation.get(run_id)))
            self._seen[run_id] = status
        if status in TERMINAL_STATUSES:
            self._seen.pop(run_id, None)
            self._correlation.pop(run_id, None)
        return events

    async def poll_once(self) -> list[Event]:
        """Read every tracked run once; return events for the ones that changed."""
        events: list[Event] = []
        for run_id in list(self._seen):
            events += await self.poll_run(run_id)
        return events
