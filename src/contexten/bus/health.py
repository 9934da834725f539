"""Health of a running app: is the store reachable, are subscriptions keeping up.

:func:`check_health` builds a :class:`HealthReport` from the parts; ``App.health()`` calls it
and ``/readyz`` will serve its :meth:`HealthReport.to_dict`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from contexten.bus.consumer import ConsumerState, ConsumerStatus
from contexten.bus.dispatcher import Dispatcher
from contexten.bus.timing import DurationSnapshot
from contexten.bus.workers import WorkersReport, workers_report
from contexten.observability.logging import get_logger
from contexten.observability.redaction import redact_text, redact_url
from contexten.resilience.supervisor import Supervisor, TaskState, TaskStatus
from contexten.store.base import EventStore

__all__ = [
    "HealthReport",
    "LoopHealth",
    "ProjectionHealth",
    "StoreHealth",
    "SubscriptionHealth",
    "check_health",
]

T = TypeVar("T")
_log = get_logger("contexten.health")


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store answered, its head position, and the error if it did not."""

    url: str
    reachable: bool
    head: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionHealth:
    """One subscription's progress: ``lag`` is how many log entries it has still to do."""

    name: str
    state: str
    position: int
    checkpoint: int
    lag: int | None
    pending: int
    handled: int
    failed_attempts: int
    parked: int
    restarts: int
    durations: DurationSnapshot = field(default_factory=DurationSnapshot)
    partitions: int = 0
    """Partitions of the subscription this process holds (of ``partition_count``)."""
    partition_count: int = 0

    @classmethod
    def from_status(cls, status: ConsumerStatus, head: int | None) -> SubscriptionHealth:
        """Combine a consumer's snapshot with the log's head."""
        return cls(
            name=status.name,
            state=status.state.value,
            position=status.position,
            checkpoint=status.checkpoint,
            lag=None if head is None else max(head - status.position, 0),
            pending=status.pending,
            handled=status.handled,
            failed_attempts=status.failed_attempts,
            parked=status.parked,
            restarts=status.restarts,
            durations=status.durations,
            partitions=len(status.partitions),
            partition_count=status.partition_count,
        )


@dataclass(frozen=True, slots=True)
class ProjectionHealth:
    """One read model's progress: ``lag`` is how many log entries it has still to fold."""

    name: str
    state: str
    position: int
    lag: int
    stale: bool = False
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """A supervised background loop (the workflow engine's tail, heartbeat, schedules):
    ``running``, or ``backing_off`` after a crash (``last_error`` says why) before its
    restart."""

    name: str
    state: str
    restarts: int
    last_error: str | None = None

    @classmethod
    def from_status(cls, status: TaskStatus) -> LoopHealth:
        """From the supervisor's view of the task."""
        return cls(status.name, status.state.value, status.restarts, status.last_error)


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Every part's health at one moment.

    Attributes:
        running: the app is started.
        store: the store's reachability and head.
        subscriptions: each subscription's state and lag.
        dead_letters: letters waiting in the dead-letter queue (None: could not count).
        blocked_workflows: workflow instances stopped in ``blocked``, waiting for an
            operator to migrate or fork them (None: could not count, or not asked).
            Informational: a blocked instance does not make the app unready.
        supervisor_restarts: how often each supervised background task was restarted.
        projections: each read model's state and lag (informational: a lagging read model
            does not make the app unready).
        agents: each agent's availability (an open circuit breaker makes a platform agent
            unavailable), JSON-ready, by agent name. Informational: a platform being down
            does not make the app unready (webhooks are still taken and stored), so it does
            not count in :attr:`ok`.
        workers: the live workers of the store (this process and the others), the
            partitions each holds and every subscription's lag over all its partitions
            (None: not running, or the store could not say). Informational.
        worker_id: this process's worker id.
        relays: each relay's state (connection, counters, lag: the log entries not yet
            relayed over all its partitions), JSON-ready, by relay name. Informational: a
            broker being down does not make the app unready (events are still stored).
        workflow_loops: the workflow engine's background loops (empty when it does not
            run here); one that is not running (crashed, waiting for its restart) makes the
            app unready, as a stopped subscription does: until it runs again no event starts
            a workflow, resumes a wait or moves a state machine.
        workflows_ready: False while the workflow engine's start-up recovery has not yet
            succeeded (it is retried, e.g. through a PostgreSQL restart; its task is then the
            one in ``workflow_loops``, with its last error): the app is unready until the
            unfinished instances are resumed and the engine tails the log.
    """

    running: bool
    store: StoreHealth
    subscriptions: tuple[SubscriptionHealth, ...] = ()
    dead_letters: int | None = None
    blocked_workflows: int | None = None
    supervisor_restarts: Mapping[str, int] = field(default_factory=dict)
    agents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    projections: tuple[ProjectionHealth, ...] = ()
    workers: WorkersReport | None = None
    worker_id: str | None = None
    relays: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    workflow_loops: tuple[LoopHealth, ...] = ()
    workflows_ready: bool = True

    @property
    def ok(self) -> bool:
        """Ready to work: running, store reachable, every subscription and every workflow
        engine loop running, the engine's start-up recovery done."""
        return (
            self.running
            and self.workflows_ready
            and self.store.reachable
            and all(s.state == ConsumerState.RUNNING.value for s in self.subscriptions)
            and all(loop.state == TaskState.RUNNING.value for loop in self.workflow_loops)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "running": self.running,
            "store": {
                "url": redact_url(self.store.url),
                "reachable": self.store.reachable,
                "head": self.store.head,
                "error": None if self.store.error is None else redact_text(self.store.error),
            },
            "subscriptions": [
                {
                    "name": s.name,
                    "state": s.state,
                    "position": s.position,
                    "checkpoint": s.checkpoint,
                    "lag": s.lag,
                    "pending": s.pending,
                    "handled": s.handled,
                    "failed_attempts": s.failed_attempts,
                    "parked": s.parked,
                    "restarts": s.restarts,
                    "partitions": {"held": s.partitions, "of": s.partition_count},
                    "handler_seconds": {
                        "count": s.durations.count,
                        "sum": s.durations.total,
                    },
                }
                for s in self.subscriptions
            ],
            "dead_letters": self.dead_letters,
            "blocked_workflows": self.blocked_workflows,
            "supervisor_restarts": dict(self.supervisor_restarts),
            "workflow_loops": [
                {
                    "name": loop.name,
                    "state": loop.state,
                    "restarts": loop.restarts,
                    "last_error": None if loop.last_error is None else redact_text(loop.last_error),
                }
                for loop in self.workflow_loops
            ],
            "workflows_ready": self.workflows_ready,
            "agents": {name: dict(agent) for name, agent in self.agents.items()},
            "projections": [
                {
                    "name": p.name,
                    "state": p.state,
                    "position": p.position,
                    "lag": p.lag,
                    "stale": p.stale,
                    "last_error": p.last_error,
                }
                for p in self.projections
            ],
            "worker_id": self.worker_id,
            "workers": None if self.workers is None else self.workers.to_dict()["workers"],
            "partitioned_subscriptions": (
                None if self.workers is None else self.workers.to_dict()["subscriptions"]
            ),
            "relays": {name: dict(relay) for name, relay in self.relays.items()},
        }


async def _part(name: str, read: Callable[[], Awaitable[T]]) -> T | None:
    """A part of the report that may fail without failing the report: None, and the log
    says which part and why (the store itself answered, so this is worth a look)."""
    try:
        return await read()
    except Exception as e:
        _log.warning("health report: a part could not be read", part=name, error=type(e).__name__)
        return None


async def check_health(
    *,
    store: EventStore,
    dispatcher: Dispatcher,
    dead_letters: Callable[[], Awaitable[int]],
    supervisor: Supervisor,
    running: bool,
    agents: Mapping[str, Mapping[str, Any]] | None = None,
    projections: Callable[[], Awaitable[Sequence[ProjectionHealth]]] | None = None,
    blocked_workflows: Callable[[], Awaitable[int]] | None = None,
    relays: Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]] | None = None,
    workflow_loops: Sequence[TaskStatus] = (),
    workflows_ready: bool = True,
) -> HealthReport:
    """Ask each part how it is; never raises for an unreachable store (it reports it).

    ``dead_letters`` counts the parked letters (the App reads its dead-letter read model:
    exact, and one small query however many letters there are); ``projections`` reports the
    read models, ``blocked_workflows`` counts the blocked instances (the workflows read
    model). ``agents`` is passed through as the report's agent availability; ``relays``
    reports each relay (it reads the store, so only when the store answered).
    """
    url = redact_url(store.url)
    head: int | None = None
    parked: int | None = None
    blocked: int | None = None
    read_models: tuple[ProjectionHealth, ...] = ()
    live: WorkersReport | None = None
    relayed: Mapping[str, Mapping[str, Any]] = {}
    if running:
        try:
            await store.ping()
            head = await store.head()
            store_health = StoreHealth(url, True, head)
        except Exception as e:
            store_health = StoreHealth(url, False, error=redact_text(f"{type(e).__name__}: {e}"))
        if store_health.reachable:
            parked = await _part("dead letters", dead_letters)
            if blocked_workflows is not None:
                blocked = await _part("blocked workflows", blocked_workflows)
            if projections is not None:
                read_models = tuple(await _part("projections", projections) or ())
            live = await _part("workers", lambda: workers_report(store))
            if relays is not None:
                relayed = await _part("relays", relays) or {}
    else:
        store_health = StoreHealth(url, False, error="the app is not running")
    return HealthReport(
        running=running,
        store=store_health,
        subscriptions=tuple(SubscriptionHealth.from_status(s, head) for s in dispatcher.statuses()),
        dead_letters=parked,
        blocked_workflows=blocked,
        supervisor_restarts=dict(supervisor.restarts),
        agents=dict(agents or {}),
        projections=read_models,
        workers=live,
        worker_id=dispatcher.worker_id,
        relays=relayed,
        workflow_loops=tuple(LoopHealth.from_status(t) for t in workflow_loops),
        workflows_ready=workflows_ready,
    )
