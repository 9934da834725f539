"""Counters of what the workflow engine did since it started, for ``/metrics``.

The engine counts as it goes (no store reads on a scrape): instances started, and those that
ended, by workflow and status; failures by their cause (the error type of the step that
failed the instance, so a step that hung and timed out shows as ``StepTimeout``); instances
found ``blocked``; triggers a running instance absorbed or that started nothing (and why);
how long steps took. Like the dispatcher's counters they restart from zero with the process,
which Prometheus reads as a counter reset. Two live gauges sit beside them: the timers this
engine holds and where its tail is in the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contexten.bus.timing import DurationHistogram
from contexten.workflows.history import WorkflowState

__all__ = ["WorkflowStats", "failure_cause"]


def failure_cause(state: WorkflowState, data: Mapping[str, Any]) -> str:
    """The short name of what failed an instance, from its ``failed`` event's ``data``: the
    failing step's error type when it names the step (``StepTimeout``,
    ``PlatformUnavailable``...), else the recorded error's."""
    failed_seq = data.get("failed_seq")
    error = data.get("error")
    if failed_seq is not None:
        op = state.ops.get(int(failed_seq))
        if op is not None and op.error and op.error.get("type"):
            return str(op.error["type"]).rsplit(".", 1)[-1]
    if error and error.get("type"):
        return str(error["type"]).rsplit(".", 1)[-1]
    return "unknown"


@dataclass(slots=True)
class WorkflowStats:
    """What one engine counted since it started (see the module docstring).

    Attributes:
        started: instances (and new runs of an id) started, by workflow.
        ended: instances that ended, by ``(workflow, status)``.
        failed: instances that ended ``failed``, by ``(workflow, cause)``.
        blocked: instances this engine marked ``blocked``, by workflow.
        absorbed: trigger events an open instance with the same id absorbed, by workflow.
        ignored: trigger events that started no run and were recorded in no run's history,
            by ``(workflow, reason)`` (a redelivery, a trigger overtaken by a newer one, a
            closed run the id reuse policy keeps closed).
        restarted: new runs started on an id whose previous run had closed, by workflow.
        schedule_ticks: runs (or events) schedules started, by schedule.
        schedule_skipped: ticks skipped because the previous run was still open.
        schedule_missed: ticks that did not run (downtime past the catch-up policy).
        step_durations: how long live step executions took (every attempt and retry wait,
            until the result was recorded; replayed steps are not counted), by
            ``(workflow, step)``.
        timers_pending: sleeps and wait deadlines this engine's instances are waiting on now.
        tail_position: the log position the engine's tail has processed (None while the
            engine does not run).
    """

    started: Counter[str] = field(default_factory=Counter)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    blocked: Counter[str] = field(default_factory=Counter)
    absorbed: Counter[str] = field(default_factory=Counter)
    ignored: Counter[tuple[str, str]] = field(default_factory=Counter)
    restarted: Counter[str] = field(default_factory=Counter)
    schedule_ticks: Counter[str] = field(default_factory=Counter)
    schedule_skipped: Counter[str] = field(default_factory=Counter)
    schedule_missed: Counter[str] = field(default_factory=Counter)
    step_durations: dict[tuple[str, str], DurationHistogram] = field(default_factory=dict)
    timers_pending: int = 0
    tail_position: int | None = None

    def record_step(self, workflow: str, step: str, seconds: float) -> None:
        """Count one live execution of ``workflow``'s step ``step`` that took ``seconds``."""
        histogram = self.step_durations.get((workflow, step))
        if histogram is None:
            histogram = self.step_durations[workflow, step] = DurationHistogram()
        histogram.observe(seconds)

    def record_end(self, state: WorkflowState, status: str, data: Mapping[str, Any]) -> None:
        """Count instance ``state`` ending with ``status`` (and its cause when failed);
        ``data`` is the terminal event's data."""
        self.ended[(state.name, status)] += 1
        if status == "failed":
            self.failed[(state.name, failure_cause(state, data))] += 1
