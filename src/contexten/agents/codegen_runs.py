"""Follow the Codegen agent runs the App started, and store their status changes as events.

Codegen's API reference describes following a run by polling ``GET .../agent/run/{id}``; it
documents no webhooks. :class:`AgentRunWatcher` is the App's durable poller:

* **What it watches** is in the store: every ``contexten.action.codegen.create_agent_run``
  event (the App records each action in the ``actions-codegen`` stream) names a run. The
  watcher tails that stream, so a run started by any process is picked up.
* **What it last saw** is in the store too: each status change is appended as the
  ``codegen.agent_run.*`` event of :func:`~contexten.integrations.codegen.agent_run_event`,
  with its delivery id (``codegen:<run>:<status>``) as the dedup key, in the run's own
  stream. After a restart the watcher reads each unfinished run's stream to learn the
  status it had, and carries on; a transition seen twice (two workers, a restart between
  the read and the append) is stored once.
* **Who polls**: one process at a time. Every dispatching process starts a watcher, but only
  the one holding the lease of the group ``agents:codegen-runs`` (one partition, renewed by
  its dispatcher's heartbeat) reads the runs; the others wait for it to lapse (a dead
  process) or be freed (a clean stop) and claim it at their next round. N workers used to
  make N reads of every run every round, against Codegen's rate limit, to store each change
  once.
* **Pace**: every ``poll_interval`` seconds of the Codegen client (15 by default,
  ``CONTEXTEN_CODEGEN_POLL_INTERVAL``), through the client's own rate limits; when every read
  of a round fails, the next round waits twice as long, up to ``max_backoff``.

The events carry the correlation id of the action that started the run (the work item), so
``wf.wait_for("codegen.agent_run.*", correlation_id=...)`` sees them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from contexten.bus.streams import default_stream
from contexten.clock import Clock, WallClock
from contexten.events.envelope import Event, utcnow
from contexten.exceptions import ContextenError, PlatformNotFound
from contexten.integrations.client import ClientRegistry
from contexten.integrations.codegen import (
    TERMINAL_STATUSES,
    AgentRunPoller,
    CodegenClient,
)
from contexten.store.base import EventStore

__all__ = ["ACTIONS_STREAM", "CREATE_ACTION_EVENT", "LEASE_GROUP", "AgentRunWatcher"]

ACTIONS_STREAM: Final = "actions-codegen"
"""The stream the App records Codegen actions in."""
CREATE_ACTION_EVENT: Final = "contexten.action.codegen.create_agent_run"
"""The recorded action that names a run to watch."""
LEASE_GROUP: Final = "agents:codegen-runs"
"""The lease (one partition) that says which process polls."""

_log = logging.getLogger("contexten.agents.codegen_runs")
_PAGE: Final = 500


@dataclass(slots=True)
class _Watched:
    correlation_id: str | None
    status: str


def run_stream(run_id: str) -> str:
    """The stream a run's ``codegen.agent_run.*`` events are stored in."""
    return default_stream(
        Event(type="codegen.agent_run.created", source="codegen", subject=f"agent_run/{run_id}")
    )


def _run_id(event: Event) -> str | None:
    result = event.data.get("result")
    if isinstance(result, dict) and result.get("id") is not None:
        return str(result["id"])
    for fingerprint in event.data.get("fingerprints") or ():
        if isinstance(fingerprint, str) and fingerprint.startswith("codegen:run:"):
            return fingerprint.removeprefix("codegen:run:")
    return None


class AgentRunWatcher:
    """The App's durable poller of Codegen agent runs (see the module docstring).

    Args:
        store: where the actions are read and the run events appended.
        clients: the registry its Codegen client comes from (built only once there is a
            run to poll, so an App that never starts one needs no Codegen credentials).
        clock: what the waits between rounds are measured with.
        max_age: runs started longer ago than this are not resumed after a restart.
        max_backoff: the longest wait after failed rounds, in seconds.
        owner: the worker id it polls as (the App's dispatcher's, whose heartbeat renews the
            lease); it polls only while it holds :data:`LEASE_GROUP`. None: always (a lone
            watcher).
        lease_ttl: seconds a lease it claims lasts without renewal.
    """

    def __init__(
        self,
        store: EventStore,
        clients: ClientRegistry,
        *,
        clock: Clock | None = None,
        max_age: timedelta = timedelta(days=7),
        max_backoff: float = 300.0,
        owner: str | None = None,
        lease_ttl: float = 10.0,
    ) -> None:
        self.store = store
        self.clients = clients
        self.clock = clock or WallClock()
        self.max_age = max_age
        self.max_backoff = max_backoff
        self.owner = owner
        self.lease_ttl = lease_ttl
        self._leased = False
        self._ensured = False
        self._version = 0
        self._runs: dict[str, _Watched] = {}
        self._failures = 0
        self.appended = 0

    @property
    def watching(self) -> dict[str, str]:
        """Runs being watched, with the status last stored for each."""
        return {run_id: w.status for run_id, w in self._runs.items()}

    async def _catch_up(self) -> None:
        """Read the create actions recorded since the last look; watch the unfinished runs."""
        cutoff = utcnow() - self.max_age
        while True:
            page = await self.store.read_stream(
                ACTIONS_STREAM, from_version=self._version + 1, limit=_PAGE
            )
            for rec in page:
                self._version = rec.version
                event = rec.event
                run_id = _run_id(event) if event.type == CREATE_ACTION_EVENT else None
                if run_id is None or run_id in self._runs or event.time < cutoff:
                    continue
                status = await self._stored_status(run_id)
                if status not in TERMINAL_STATUSES:
                    self._runs[run_id] = _Watched(event.correlation_id, status)
            if len(page) < _PAGE:
                return

    async def _holds_lease(self) -> bool:
        """Whether this watcher may poll now: it holds the lease, or has just claimed it.

        On taking the lease over, it forgets what it knew: the previous holder may have
        stored changes since, so the runs and their statuses are read from the store again.
        """
        if self.owner is None:
            return True
        if not self._ensured:
            await self.store.ensure_partitions(LEASE_GROUP, 1, position=0)
            self._ensured = True
        parts = await self.store.partitions(LEASE_GROUP)
        held = any(p.owner == self.owner and p.held for p in parts)
        if not held and not any(p.held for p in parts):  # free, or its lease lapsed
            held = bool(
                await self.store.claim_partitions(
                    LEASE_GROUP, self.owner, limit=1, ttl=self.lease_ttl
                )
            )
        if held and not self._leased:
            self._version, self._runs = 0, {}
        self._leased = held
        return held

    async def _stored_status(self, run_id: str) -> str:
        """The status of the last event stored for the run (``""`` when none is)."""
        events = await self.store.read_stream(run_stream(run_id))
        return _status_of(events[-1].event) if events else ""

    async def poll_once(self) -> int:
        """One round: pick up new runs, read each watched run, store what changed.

        Returns how many events were appended (repeats the store already had count too);
        0 without a read when another process holds the lease.

        Raises:
            ContextenError: every read of the round failed (the caller backs off).
        """
        if not await self._holds_lease():
            return 0
        await self._catch_up()
        if not self._runs:
            return 0
        poller = AgentRunPoller(self.clients.get(CodegenClient))
        appended, failures = 0, []
        for run_id, watched in list(self._runs.items()):
            poller.track([run_id], status=watched.status, correlation_id=watched.correlation_id)
            try:
                events = await poller.poll_run(run_id)
            except PlatformNotFound:
                _log.warning("codegen run %s is gone (404); no longer watched", run_id)
                del self._runs[run_id]
                continue
            except ContextenError as e:
                failures.append(e)
                continue
            for event in events:
                await self.store.append(run_stream(run_id), [event], dedup_key=event.delivery_id)
                watched.status = _status_of(event)
                appended += 1
            if watched.status in TERMINAL_STATUSES:
                del self._runs[run_id]
        self.appended += appended
        if failures and len(failures) == len(self._runs):
            raise failures[-1]
        return appended

    def _interval(self) -> float:
        base = float(self.clients.get(CodegenClient).poll_interval) if self._runs else 1.0
        return float(min(base * (2**self._failures), max(self.max_backoff, base)))

    async def run(self) -> None:
        """Poll forever (the App runs it under its supervisor)."""
        idle = 1.0
        while True:
            try:
                await self.poll_once()
                self._failures = 0
            except ContextenError as e:
                self._failures += 1
                _log.warning(
                    "codegen runs: a polling round failed (%s: %s); backing off",
                    type(e).__name__,
                    e,
                )
            await self.clock.sleep(self._interval() if self._runs else idle)


def _status_of(event: Event) -> str:
    """The status a run event was made for (the last part of its delivery id)."""
    delivery = event.delivery_id or ""
    return delivery.rsplit(":", 1)[-1] if delivery.count(":") >= 2 else ""
