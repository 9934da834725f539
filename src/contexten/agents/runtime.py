"""The App's side of acting on platforms: clients, agents, the action log and echoes.

An :class:`~contexten.App` holds one :class:`AgentRuntime`, built the first time something
needs it (an App with no platform configured never builds one). It keeps:

* the :class:`~contexten.integrations.client.ClientRegistry` the actions act through (pools
  are opened on first use, closed when the App stops) and the
  :class:`~contexten.agents.AgentManager` handlers see as ``ctx.agents``;
* the **action log**: it is the :class:`~contexten.integrations.action.ActionRecorder` in force
  while handlers and workflow steps run, so every action is appended to the store as a
  ``contexten.action.<platform>.<action>`` event, correlated with the work item and caused by
  the event being handled (or the workflow's trigger event);
* the **echo detector**: an event is an echo when our bot is its actor
  (:class:`~contexten.integrations.echo.BotIdentity`) or it is about an object one of our
  recorded actions just touched. The App does not deliver echoes to handlers or workflow
  triggers unless they ask for them, and marks each one with a ``contexten.echo.detected``
  event (see :meth:`AgentRuntime.echo_marker`).
"""

from __future__ import annotations

import contextvars
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from contexten.agents.manager import AgentManager
from contexten.bus.context import HandlerContext
from contexten.bus.subscription import Handler, Subscription
from contexten.events.envelope import Event, utcnow
from contexten.exceptions import WorkflowError
from contexten.integrations.action import ActionRecord, current_recorder, use_recorder
from contexten.integrations.client import (
    ClientRegistry,
    current_clients,
    set_default_clients,
    use_clients,
)
from contexten.integrations.echo import BotIdentity, EchoDetector, event_actor, event_fingerprints
from contexten.observability import tracing
from contexten.store.base import EventStore
from contexten.workflows.steps import current_step

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = [
    "ACTION_PREFIX",
    "ECHO_EVENT",
    "ECHO_SUBSCRIPTION",
    "AgentRuntime",
    "EchoReason",
    "current_cause",
]

ACTION_PREFIX: Final = "contexten.action."
"""Every recorded action's event type starts with this."""
ECHO_EVENT: Final = "contexten.echo.detected"
"""The event that marks an echo: ``data`` names the echo's id and type and why it is one."""
ECHO_SUBSCRIPTION: Final = "contexten.echoes"
"""The name of the App's subscription that marks echoes."""

EchoReason = Literal["bot_actor", "recorded_action"]
"""Why an event is an echo: our bot is its actor, or it is about an object we just touched."""

_ECHO_PLATFORMS: Final = ("github.", "linear.", "slack.")
_TRACED_ACTIONS: Final = 10_000  # fingerprints whose action trace an echo links to
_WARM_UP_SCAN: Final = 5000  # recent log entries read at start to remember our own actions

_log = logging.getLogger("contexten.agents")

_cause: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "contexten_action_cause", default=None
)


def current_cause() -> Event | None:
    """The event a handler is handling in this task (None outside handlers)."""
    return _cause.get()


def _input_correlation(value: Any) -> str | None:
    if isinstance(value, Mapping):
        found = value.get("correlation_id")
        return found if isinstance(found, str) else None
    return None


class AgentRuntime:
    """Clients, agents, action log and echo detection for one App; see the module docstring.

    Args:
        store: where action events are appended.
        clients: the registry actions use (default: one configured from the environment).
        manager: the agent manager (default: one over ``clients`` with the four platform
            agents, built on first use).
        identity: our bot's identities (default: from the environment).
        engine: the workflow engine, to tell which workflow a step belongs to.
        echo_ttl: seconds a recorded action's objects stay matchable as echoes.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        clients: ClientRegistry | None = None,
        manager: AgentManager | None = None,
        identity: BotIdentity | None = None,
        engine: WorkflowEngine | None = None,
        echo_ttl: float = 600.0,
    ) -> None:
        if clients is None and manager is not None:
            clients = manager.clients
        self.store = store
        self.clients: ClientRegistry = clients if clients is not None else ClientRegistry()
        self._manager = manager
        self.engine = engine
        self.echoes = EchoDetector(identity, ttl=echo_ttl)
        self._action_traces: OrderedDict[str, str] = OrderedDict()
        """Object fingerprint -> the traceparent of our action that touched it (bounded):
        an echo's span is linked to the trace of the action that caused it."""
        self.recorded = 0
        """Action events appended so far."""
        self.record_failures = 0
        """Actions whose event could not be appended (the action itself was done)."""

    @property
    def identity(self) -> BotIdentity:
        """Who "we" are on each platform."""
        return self.echoes.identity

    @property
    def manager(self) -> AgentManager:
        """The agent manager handlers see as ``ctx.agents``."""
        if self._manager is None:
            self._manager = AgentManager(self.clients)
        return self._manager

    # -- the action log -------------------------------------------------------------------

    async def record(self, record: ActionRecord) -> None:
        """Append ``record`` as an event (the ActionRecorder protocol); never raises.

        Its objects are remembered for echo detection first, before any ``await``: the
        platform may already be sending the webhook the action caused.
        """
        self.echoes.observe(record)
        event = tracing.inject(self.action_event(record))
        if event.traceparent:
            for fingerprint in record.fingerprints:
                self._action_traces[fingerprint] = event.traceparent
                self._action_traces.move_to_end(fingerprint)
            while len(self._action_traces) > _TRACED_ACTIONS:
                self._action_traces.popitem(last=False)
        dedup = (
            f"action:{record.action}:{record.idempotency_key}" if record.idempotency_key else None
        )
        try:
            await self.store.append(f"actions-{record.platform}", [event], dedup_key=dedup)
        except Exception as e:
            self.record_failures += 1
            _log.error(
                "could not record action %s.%s: %s: %s",
                record.platform,
                record.action,
                type(e).__name__,
                e,
            )
            return
        self.recorded += 1

    def action_event(self, record: ActionRecord) -> Event:
        """The ``contexten.action.*`` event for ``record``, with what caused it.

        In a workflow step: the workflow and step are named in ``data`` and the workflow's
        trigger event is the cause. In a handler: the event handled is the cause. The
        correlation id is the cause's.
        """
        event = record.to_event()
        data = dict(event.data)
        correlation: str | None = None
        causation: str | None = None
        try:
            step = current_step()
        except WorkflowError:
            step = None
        if step is not None:
            data.update(workflow_id=step.workflow_id, step=step.name, seq=step.seq)
            state = self.engine.live_state(step.workflow_id) if self.engine else None
            if state is not None:
                causation = state.trigger_event_id
                correlation = _input_correlation(state.input) if state.input_is_event else None
        cause = _cause.get()
        if cause is not None:
            causation = causation or cause.id
            correlation = correlation or cause.correlation_id
        return event.replace(data=data, correlation_id=correlation, causation_id=causation)

    async def handle(self, handler: Handler, event: Event, ctx: HandlerContext) -> None:
        """Run ``handler`` as the App: ``ctx.agents`` set, its actions recorded here and
        caused by ``event``.

        The App starts its dispatcher inside :meth:`bound`, so its workers usually have the
        clients and the recorder in force already, and only the cause is set per delivery.
        """
        ctx.agents = self.manager
        if current_recorder() is not self:  # e.g. a subscription added while running
            with self.bound(event):
                await handler(event, ctx)
            return
        token = _cause.set(event)
        try:
            await handler(event, ctx)
        finally:
            _cause.reset(token)

    @contextmanager
    def bound(self, cause: Event | None = None) -> Iterator[None]:
        """Inside the block, actions use these clients and are recorded here (with ``cause``).

        Tasks created inside the block (a workflow engine's tail and instances) keep both.
        """
        token = _cause.set(cause)
        try:
            with use_recorder(self), use_clients(self.clients):
                yield
        finally:
            _cause.reset(token)

    async def warm_up(self, *, scan: int = _WARM_UP_SCAN) -> int:
        """Remember the objects of recent recorded actions (after a restart), so the webhooks
        they cause are still recognised as echoes. Returns how many actions were found."""
        found = 0
        cutoff = utcnow() - timedelta(seconds=self.echoes.ttl)
        for rec in reversed(await self.store.read_all_backwards(limit=scan)):
            event = rec.event
            if event.type.startswith(ACTION_PREFIX) and event.time >= cutoff:
                self.echoes.observe_event(event)
                found += 1
        return found

    # -- echoes ---------------------------------------------------------------------------

    def echo_reason(self, event: Event) -> EchoReason | None:
        """Why ``event`` is an echo of our own action, or None when it is not one.

        Never raises: an event the detector cannot read counts as not an echo (delivering
        too much is recoverable; dropping a person's event is not).
        """
        if not event.type.startswith(_ECHO_PLATFORMS):
            return None
        try:
            platform = event.type.split(".", 1)[0]
            if self.identity.is_ours(platform, event_actor(event)):
                return "bot_actor"
            if self.echoes.is_echo(event):
                return "recorded_action"
        except Exception as e:
            _log.warning("echo detection failed on %s (%s); delivering it", event.id, e)
        return None

    def is_echo(self, event: Event) -> bool:
        """Whether ``event`` was caused by our own action (see :meth:`echo_reason`)."""
        return self.echo_reason(event) is not None

    def echo_marker(self) -> Subscription:
        """The subscription that marks each echo with a ``contexten.echo.detected`` event.

        The mark makes the decision visible (``contexten events list``, timelines) and
        auditable; delivery itself is filtered by each subscription's ``where``.
        """

        async def mark_echo(event: Event, ctx: HandlerContext) -> None:
            reason = self.echo_reason(event)
            if reason is not None and self._action_traces:
                for fingerprint in event_fingerprints(event):
                    traceparent = self._action_traces.get(fingerprint)
                    if traceparent is not None:
                        tracing.link_current_span(traceparent, "contexten.echo_of")
                        break
            if reason is not None:
                await ctx.emit(
                    ECHO_EVENT,
                    {
                        "event_id": event.id,
                        "event_type": event.type,
                        "reason": reason,
                        "actor": event_actor(event),
                    },
                )

        return Subscription(
            name=ECHO_SUBSCRIPTION,
            patterns=["github.**", "linear.**", "slack.**"],
            handler=mark_echo,
            start="now",
            key=None,
            echoes=True,
        )

    # -- health and lifecycle -------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        """Each agent's availability; for platform clients in use, their breaker state and
        rate-limit budgets (calls remaining of the limit in each bucket, as last learned)."""
        clients = self.clients.health()
        report: dict[str, dict[str, Any]] = {}
        for name, health in self.manager.health().items():
            entry: dict[str, Any] = {
                "available": health.available,
                "detail": health.detail,
                "retry_after": round(health.retry_after, 3),
            }
            client = clients.get(name)
            if client is not None:
                entry["breaker"] = client.breaker.state.value
                entry["open_connections"] = client.open_connections
                entry["rate_limits"] = {
                    bucket: {"remaining": b.remaining, "limit": b.limit, "waits": b.waits}
                    for bucket, b in sorted(client.rate_limits.items())
                }
            report[name] = entry
        return report

    async def start(self) -> None:
        """Remember recent actions (:meth:`warm_up`) and make the clients the process
        default, so module-level actions work anywhere in the process while the App runs."""
        await self.warm_up()
        set_default_clients(self.clients)

    async def stop(self) -> None:
        """Stop being the process default; close the clients' connection pools (they reopen
        on next use)."""
        if current_clients() is self.clients:
            set_default_clients(None)
        await self.clients.aclose()
