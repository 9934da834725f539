"""Prometheus metrics of a running App: dispatcher lag, dead letters, restarts, store health.

The values already exist in :meth:`App.health() <contexten.App.health>`'s report (each
subscription's position, pending and handled counts, the dead-letter count, the supervisor's
restart counts), so nothing on the delivery path is instrumented: :class:`AppCollector`
fetches a report when ``/metrics`` is scraped and turns it into metric families.

================================================  =======  ==================================
metric                                            type     labels
================================================  =======  ==================================
``contexten_up``                                  gauge    1 when the app is ready (readyz)
``contexten_store_up``                            gauge    1 when the store answered
``contexten_store_head``                          gauge    the global log's last position
``contexten_dispatcher_lag``                      gauge    ``subscription``: entries to do
``contexten_dispatcher_pending``                  gauge    ``subscription``: read, not done
``contexten_dispatcher_position``                 gauge    ``subscription``
``contexten_subscription_running``                gauge    ``subscription``: 1 when running
``contexten_workers_alive``                       gauge    live workers on the store (all hosts)
``contexten_partitions_owned``                    gauge    ``subscription``: held by this process
``contexten_subscription_lag``                    gauge    ``subscription``: over all partitions
``contexten_handler_deliveries_total``            counter  ``subscription``: handled
``contexten_handler_failed_attempts_total``       counter  ``subscription``
``contexten_handler_parked_total``                counter  ``subscription``: dead-lettered
``contexten_subscription_restarts_total``         counter  ``subscription``: reader restarts
``contexten_handler_duration_seconds``            histo.   ``subscription``: attempt duration
``contexten_agent_available``                     gauge    ``agent``: 0 while it cannot serve
``contexten_circuit_open``                        gauge    ``agent``: 1 while its breaker is open
``contexten_client_open_connections``             gauge    ``agent``: pooled connections open
``contexten_dead_letters``                        gauge    letters parked in the DLQ now
``contexten_workflows_blocked``                   gauge    instances blocked now (read model)
``contexten_supervisor_restarts_total``           counter  ``task``: background restarts
``contexten_projection_lag``                      gauge    ``projection``: events not yet folded
``contexten_projection_position``                 gauge    ``projection``: last position folded
``contexten_workflow_instances``                  gauge    ``status``: instances now (read model)
``contexten_workflow_tail_lag``                   gauge    log entries the engine's tail has to do
``contexten_workflow_timers_pending``             gauge    sleeps and wait deadlines held here
``contexten_workflows_started_total``             counter  ``workflow``: instances and new runs
``contexten_workflow_step_duration_seconds``      histo.   ``workflow``, ``step``: live steps
``contexten_workflows_ended_total``               counter  ``workflow``, ``status``
``contexten_workflows_failed_total``              counter  ``workflow``, ``cause`` (error type)
``contexten_workflows_blocked_total``             counter  ``workflow``: instances blocked
``contexten_workflow_triggers_absorbed_total``    counter  ``workflow``: absorbed by an open run
``contexten_workflow_triggers_ignored_total``     counter  ``workflow``, ``reason``: no run
``contexten_workflow_runs_restarted_total``       counter  ``workflow``: new run on a closed id
``contexten_schedule_ticks_total``                counter  ``schedule``: runs started
``contexten_schedule_skipped_total``              counter  ``schedule``: previous run still open
``contexten_schedule_missed_total``               counter  ``schedule``: not run after downtime
``contexten_relay_lag``                           gauge    ``relay``: log entries not yet relayed
``contexten_relay_connected``                     gauge    ``relay``: 1 while connected
``contexten_relay_published_total``               counter  ``relay``: messages the broker stored
``contexten_relay_duplicates_total``              counter  ``relay``: re-publishes it dropped
``contexten_relay_rejected_total``                counter  ``relay``: refused, dead-lettered
``contexten_relay_failures_total``                counter  ``relay``: failed attempts (retried)
================================================  =======  ==================================

The delivery counters and the handler-duration histogram count since the dispatcher started,
the workflow counters since the engine started (Prometheus reads a drop to zero as a counter
reset). The instances by status are every worker's (the ``workflows`` read model); the tail
lag, timers, counters and step durations are this process's engine's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from contexten.bus.timing import DurationHistogram
from contexten.observability.metrics import Metrics

if TYPE_CHECKING:
    from contexten.bus.health import HealthReport, SubscriptionHealth

__all__ = ["AppCollector", "WorkflowCounts", "instrument_app"]


class WorkflowCounts(Protocol):
    """What the workflow engine counts (``App.workflows.stats``), as the collector reads it."""

    @property
    def started(self) -> Mapping[str, int]:
        """Instances and new runs started, by workflow."""
        ...

    @property
    def step_durations(self) -> Mapping[tuple[str, str], DurationHistogram]:
        """How long live steps took, by (workflow, step)."""
        ...

    @property
    def timers_pending(self) -> int:
        """Sleeps and wait deadlines the engine's instances wait on now."""
        ...

    @property
    def tail_position(self) -> int | None:
        """Where the engine's tail is in the log (None: the engine does not run)."""
        ...

    @property
    def ended(self) -> Mapping[tuple[str, str], int]:
        """Instances that ended, by (workflow, status)."""
        ...

    @property
    def failed(self) -> Mapping[tuple[str, str], int]:
        """Instances that ended ``failed``, by (workflow, cause)."""
        ...

    @property
    def blocked(self) -> Mapping[str, int]:
        """Instances marked ``blocked``, by workflow."""
        ...

    @property
    def absorbed(self) -> Mapping[str, int]:
        """Triggers absorbed by an open instance, by workflow."""
        ...

    @property
    def ignored(self) -> Mapping[tuple[str, str], int]:
        """Triggers that started no run and were recorded nowhere, by (workflow, reason)."""
        ...

    @property
    def restarted(self) -> Mapping[str, int]:
        """New runs started on an id whose previous run had closed, by workflow."""
        ...

    @property
    def schedule_ticks(self) -> Mapping[str, int]:
        """Runs (or events) schedules started, by schedule."""
        ...

    @property
    def schedule_skipped(self) -> Mapping[str, int]:
        """Ticks skipped because the previous run was still open, by schedule."""
        ...

    @property
    def schedule_missed(self) -> Mapping[str, int]:
        """Ticks that did not run after downtime, by schedule."""
        ...


HealthSource = Callable[[], Awaitable["HealthReport"]]
"""Where the collector gets its report from: ``App.health``."""

StatusCounts = Callable[[], Awaitable[Mapping[str, int]]]
"""Where the collector gets the workflow instances by status from: the ``workflows`` read
model (``App.read.workflow_counts``)."""


def _per_subscription(
    family: GaugeMetricFamily | CounterMetricFamily,
    subscriptions: Iterable[SubscriptionHealth],
    value: Callable[[SubscriptionHealth], float | None],
) -> GaugeMetricFamily | CounterMetricFamily:
    for sub in subscriptions:
        v = value(sub)
        if v is not None:
            family.add_metric([sub.name], v)
    return family


class AppCollector(Collector):
    """A Prometheus collector over an App's health report (see the module docstring).

    Prometheus collectors are synchronous and the report needs the store, so the report is
    fetched by :meth:`refresh` (registered with :meth:`Metrics.on_scrape`, awaited by
    ``/metrics`` before it renders) and :meth:`collect` reads the last one fetched.

    Args:
        health: an async callable returning the report (``app.health``).
        workflows: the workflow engine's counters (``app.workflows.stats``), if any.
        statuses: the workflow instances by status (``app.read.workflow_counts``), if any;
            read only while the app runs and its store answers.
    """

    def __init__(
        self,
        health: HealthSource,
        workflows: WorkflowCounts | None = None,
        statuses: StatusCounts | None = None,
    ) -> None:
        self._health = health
        self._workflows = workflows
        self._statuses = statuses
        self._report: HealthReport | None = None
        self._counts: Mapping[str, int] | None = None

    async def refresh(self) -> None:
        """Fetch a fresh report (``App.health()`` reports an unreachable store; it does not
        raise for one), then the instances by status (a failure there is logged by the
        scrape and the previous counts stay)."""
        self._report = await self._health()
        if self._statuses is not None and self._report.running and self._report.store.reachable:
            self._counts = dict(await self._statuses())

    def collect(self) -> Iterator[Metric]:
        """The metric families of the last report (nothing before the first refresh)."""
        report = self._report
        if report is None:
            return
        subs = report.subscriptions
        yield GaugeMetricFamily(
            "contexten_up", "1 when the app is ready: running, store reachable.", report.ok
        )
        yield GaugeMetricFamily(
            "contexten_store_up", "1 when the event store answered.", report.store.reachable
        )
        if report.store.head is not None:
            yield GaugeMetricFamily(
                "contexten_store_head", "The global log's last position.", report.store.head
            )
        yield _per_subscription(
            GaugeMetricFamily(
                "contexten_dispatcher_lag",
                "Log entries a subscription has still to handle (head - position).",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.lag,
        )
        yield _per_subscription(
            GaugeMetricFamily(
                "contexten_dispatcher_pending",
                "Entries a subscription has read and not finished (in flight, waiting, retrying).",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.pending,
        )
        yield _per_subscription(
            GaugeMetricFamily(
                "contexten_dispatcher_position",
                "The log position up to which a subscription is done.",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.position,
        )
        yield _per_subscription(
            GaugeMetricFamily(
                "contexten_subscription_running",
                "1 when the subscription's consumer is running.",
                labels=["subscription"],
            ),
            subs,
            lambda s: 1.0 if s.state == "running" else 0.0,
        )
        yield _per_subscription(
            CounterMetricFamily(
                "contexten_handler_deliveries",
                "Deliveries handled (handler succeeded or predicate declined) since start.",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.handled,
        )
        yield _per_subscription(
            CounterMetricFamily(
                "contexten_handler_failed_attempts",
                "Handler attempts that failed since start.",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.failed_attempts,
        )
        yield _per_subscription(
            CounterMetricFamily(
                "contexten_handler_parked",
                "Deliveries parked in the dead-letter queue since start.",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.parked,
        )
        yield _per_subscription(
            CounterMetricFamily(
                "contexten_subscription_restarts",
                "Restarts of a subscription's reader or checkpoint loop after a crash.",
                labels=["subscription"],
            ),
            subs,
            lambda s: s.restarts,
        )
        yield from _worker_families(report)
        durations = HistogramMetricFamily(
            "contexten_handler_duration_seconds",
            "How long handler attempts took (successful or not), since start.",
            labels=["subscription"],
        )
        for sub in subs:
            durations.add_metric(
                [sub.name], sub.durations.cumulative(), sum_value=sub.durations.total
            )
        yield durations
        if report.dead_letters is not None:
            yield GaugeMetricFamily(
                "contexten_dead_letters",
                "Letters parked in the dead-letter queue now.",
                report.dead_letters,
            )
        if report.blocked_workflows is not None:
            yield GaugeMetricFamily(
                "contexten_workflows_blocked",
                "Workflow instances blocked now, waiting for an operator.",
                report.blocked_workflows,
            )
        yield from _agent_families(report)
        yield from _relay_families(report)
        if report.projections:
            lag = GaugeMetricFamily(
                "contexten_projection_lag",
                "Log entries a read model has still to fold.",
                labels=["projection"],
            )
            position = GaugeMetricFamily(
                "contexten_projection_position",
                "The last log position folded into a read model.",
                labels=["projection"],
            )
            for p in report.projections:
                lag.add_metric([p.name], p.lag)
                position.add_metric([p.name], p.position)
            yield lag
            yield position
        restarts = CounterMetricFamily(
            "contexten_supervisor_restarts",
            "Restarts of supervised background tasks after a crash.",
            labels=["task"],
        )
        for task, count in sorted(report.supervisor_restarts.items()):
            restarts.add_metric([task], count)
        yield restarts
        if self._counts is not None:
            instances = GaugeMetricFamily(
                "contexten_workflow_instances",
                "Workflow instances in each status now, on every worker (the workflows read "
                "model).",
                labels=["status"],
            )
            for status, count in sorted(self._counts.items()):
                instances.add_metric([status], count)
            yield instances
        if self._workflows is not None:
            yield from _engine_gauges(self._workflows, report)
            yield from _workflow_families(self._workflows)


def _engine_gauges(counts: WorkflowCounts, report: HealthReport) -> Iterator[Metric]:
    """The engine's live gauges: its tail's lag behind the log's head, its pending timers."""
    if counts.tail_position is not None and report.store.head is not None:
        yield GaugeMetricFamily(
            "contexten_workflow_tail_lag",
            "Log entries the workflow engine's tail has still to process (triggers, waits, "
            "state machines wait on it).",
            max(report.store.head - counts.tail_position, 0),
        )
    yield GaugeMetricFamily(
        "contexten_workflow_timers_pending",
        "Sleeps and wait deadlines this process's workflow instances are waiting on now.",
        counts.timers_pending,
    )


def _counter(
    metric: str, help_text: str, labels: list[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family with one sample per key of ``values`` (a label value, or a tuple of
    them in the order of ``labels``), sorted so scrapes are stable."""
    family = CounterMetricFamily(metric, help_text, labels=labels)
    for key, count in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], count)
    return family


def _workflow_families(counts: WorkflowCounts) -> Iterator[Metric]:
    """The workflow engine's counters and step durations as metric families."""
    yield _counter(
        "contexten_workflows_started",
        "Workflow instances (and new runs of a closed id) started by this process.",
        ["workflow"],
        counts.started,
    )
    steps = HistogramMetricFamily(
        "contexten_workflow_step_duration_seconds",
        "How long live workflow steps took, attempts and retry waits included, until their "
        "result was recorded (replayed steps are not counted).",
        labels=["workflow", "step"],
    )
    for (name, step), histogram in sorted(counts.step_durations.items()):
        snapshot = histogram.snapshot()
        steps.add_metric([name, step], snapshot.cumulative(), sum_value=snapshot.total)
    yield steps
    yield _counter(
        "contexten_workflows_ended",
        "Workflow instances that ended (completed, failed, compensated, cancelled).",
        ["workflow", "status"],
        counts.ended,
    )
    yield _counter(
        "contexten_workflows_failed",
        "Workflow instances that ended failed, by cause (the failing step's error type, "
        "StepTimeout for a step that hung).",
        ["workflow", "cause"],
        counts.failed,
    )
    yield _counter(
        "contexten_workflow_triggers_ignored",
        "Trigger events that started no run and were recorded in no run's history, by "
        "reason (duplicate, stale, id_reuse_policy, contended).",
        ["workflow", "reason"],
        counts.ignored,
    )
    yield _counter(
        "contexten_workflows_blocked",
        "Workflow instances that could not continue and were marked blocked.",
        ["workflow"],
        counts.blocked,
    )
    yield _counter(
        "contexten_workflow_triggers_absorbed",
        "Trigger events that an open instance with the same id absorbed (no new run).",
        ["workflow"],
        counts.absorbed,
    )
    yield _counter(
        "contexten_workflow_runs_restarted",
        "New runs started on an instance id whose previous run had closed.",
        ["workflow"],
        counts.restarted,
    )
    yield _counter(
        "contexten_schedule_ticks",
        "Runs or events schedules started.",
        ["schedule"],
        counts.schedule_ticks,
    )
    yield _counter(
        "contexten_schedule_skipped",
        "Schedule ticks skipped because the previous run was still open.",
        ["schedule"],
        counts.schedule_skipped,
    )
    yield _counter(
        "contexten_schedule_missed",
        "Schedule ticks that did not run (downtime beyond the catch-up policy).",
        ["schedule"],
        counts.schedule_missed,
    )


def _worker_families(report: HealthReport) -> Iterator[Metric]:
    """Workers alive, partitions this process owns, and each subscription's lag over all its
    partitions, whichever worker holds them (``contexten_dispatcher_lag`` is this process's)."""
    yield _per_subscription(
        GaugeMetricFamily(
            "contexten_partitions_owned",
            "Partitions of a subscription this process holds.",
            labels=["subscription"],
        ),
        report.subscriptions,
        lambda s: s.partitions,
    )
    if report.workers is None:
        return
    yield GaugeMetricFamily(
        "contexten_workers_alive",
        "Workers registered on the store with a live heartbeat (every host).",
        len(report.workers.workers),
    )
    lag = GaugeMetricFamily(
        "contexten_subscription_lag",
        "Log entries a subscription has still to handle over all its partitions (head minus "
        "its lowest partition checkpoint), whichever worker holds them.",
        labels=["subscription"],
    )
    for group in report.workers.groups:
        lag.add_metric([group.group.removeprefix("sub:")], group.lag)
    yield lag


def _relay_families(report: HealthReport) -> Iterator[Metric]:
    """Lag, connection and counters of each relay (``App.relay_to_nats``) in the report."""
    if not report.relays:
        return
    gauges = (
        ("contexten_relay_lag", "Log entries not yet relayed (head - lowest checkpoint).", "lag"),
        ("contexten_relay_connected", "1 while the relay's broker connection is up.", "connected"),
    )
    counters = (
        ("contexten_relay_published", "Messages the broker stored, since start.", "published"),
        (
            "contexten_relay_duplicates",
            "Re-published messages the broker dropped as duplicates (by message id).",
            "duplicates",
        ),
        (
            "contexten_relay_rejected",
            "Messages the broker refused for good (dead-lettered), since start.",
            "rejected",
        ),
        ("contexten_relay_failures", "Publish attempts that failed (retried).", "failures"),
    )
    families: list[tuple[GaugeMetricFamily | CounterMetricFamily, str]] = [
        (GaugeMetricFamily(name, text, labels=["relay"]), key) for name, text, key in gauges
    ] + [(CounterMetricFamily(name, text, labels=["relay"]), key) for name, text, key in counters]
    for family, key in families:
        for name, entry in sorted(report.relays.items()):
            value = entry.get(key)
            if value is not None:
                family.add_metric([name], float(value))
        yield family


def _agent_families(report: HealthReport) -> Iterator[Metric]:
    """Availability, breaker and pool gauges of the platform agents in the report."""
    if not report.agents:
        return
    available = GaugeMetricFamily(
        "contexten_agent_available",
        "1 when the agent can take work now (0 while its circuit breaker is open...).",
        labels=["agent"],
    )
    circuit = GaugeMetricFamily(
        "contexten_circuit_open",
        "1 while the platform client's circuit breaker is open (calls fail fast).",
        labels=["agent"],
    )
    connections = GaugeMetricFamily(
        "contexten_client_open_connections",
        "Connections the platform client's pool holds open.",
        labels=["agent"],
    )
    for name, entry in sorted(report.agents.items()):
        available.add_metric([name], 1.0 if entry.get("available", True) else 0.0)
        if "breaker" in entry:
            circuit.add_metric([name], 1.0 if entry["breaker"] == "open" else 0.0)
        if "open_connections" in entry:
            connections.add_metric([name], float(entry["open_connections"]))
    yield available
    yield circuit
    yield connections


def instrument_app(
    metrics: Metrics,
    health: HealthSource,
    workflows: WorkflowCounts | None = None,
    statuses: StatusCounts | None = None,
) -> AppCollector:
    """Register an :class:`AppCollector` over ``health`` (and the workflow engine's
    ``workflows`` counters, and the instances by status from ``statuses``) on ``metrics``
    and its scrape hook.

    Returns:
        The collector (already registered).
    """
    collector = AppCollector(health, workflows, statuses)
    metrics.registry.register(collector)
    metrics.on_scrape(collector.refresh)
    return collector
