"""A workflow instance's history: the event types in its stream, and the fold into state.

Every workflow instance is one stream, ``$wf-{workflow_id}`` (the ``$`` prefix keeps it away
from ordinary handlers). Its state is :func:`fold` of that stream's events; nothing else is
the source of truth. Durable calls are numbered (``seq`` 1, 2, 3...) in the order the
workflow makes them; each history event that answers a call carries its ``seq``, which is how
a replay finds the recorded result of call number *n*.

The event types, all under ``contexten.workflow.``:

=========================== ==============================================================
``started``                 name, version, input, trigger, parent (first event, always);
                            again after a terminal event for a new *run* of the same id:
                            ``run`` (2, 3...) and ``previous_run`` (its run, status, version)
``step_completed``          seq, name, result
``step_failed``             seq, name, error, attempts (after the step's retries)
``timer_started``           seq, fire_at
``timer_fired``             seq
``wait_started``            seq, pattern, correlation_id, deadline
``wait_matched``            seq, event (the whole matching event), position
``wait_timed_out``          seq
``side_effect``             seq, kind (``now``/``uuid4``/``random``), value
``event_emitted``           seq, event_id, type, stream
``child_started``           seq, name, child_id
``child_finished``          seq, child_id, status, result, error
``cancel_requested``        reason
``compensation_started``    reason, error
``compensation_step_completed`` / ``compensation_step_failed``  seq, name (, error, attempts)
``transitioned``            state machines: seq, event_id, event_type, position, source, to
``transition_rejected``     state machines: event_id, event_type, position, state, reason
``completed`` / ``failed`` / ``compensated`` / ``cancelled``   terminal
``redriven``                an operator asked a failed or blocked instance to try again
``claimed``                 owner: another engine took the instance over (its owner died)
``blocked``                 reason (``nondeterminism`` / ``version_not_registered``), error,
                            version: the instance cannot continue; not terminal, it waits
                            for an operator (``redriven`` after a fix, or ``migrated``)
``migrated``                from_version, to_version, point: an operator moved a blocked
                            instance to another registered version, verified by replay
                            first; it resumes after call ``point`` (its last compatible
                            one). Calls after it are superseded: ``superseded`` lists them,
                            ``superseded_events`` their event versions, ``divergence`` why
                            (see :mod:`contexten.workflows.migration`)
``patched``                 patch_id, seq: ``wf.patched(patch_id)`` was first reached live
                            after call ``seq`` (takes no call number of its own)
``trigger_absorbed``        event_id, event_type, position: a trigger event for this id came
                            while the run was open and started nothing
``forked``                  to, cancel_old: an operator started ``to`` from this instance's
                            input (its ``started`` has ``forked_from``)
=========================== ==============================================================

An instance id is one stream for its whole life: a later run of the same id (see
:class:`~contexten.workflows.IdReusePolicy`) begins with another ``started`` event after the
previous run's terminal one, and :func:`fold` folds only the latest run (keeping its number
and a summary of the run before).
"""

from __future__ import annotations

import enum
import os
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

import msgspec

from contexten.events.envelope import Event
from contexten.store.base import RecordedEvent

__all__ = [
    "PREFIX",
    "STREAM_PREFIX",
    "TERMINAL_STATUSES",
    "HistoryEntry",
    "Op",
    "WorkflowState",
    "WorkflowStatus",
    "error_info",
    "fast_id",
    "fold",
    "history_event",
    "public_stream",
    "stream_name",
    "workflow_id_of",
]

PREFIX: Final = "contexten.workflow."
"""Prefix of every workflow history event type."""

STREAM_PREFIX: Final = "$wf-"
"""Prefix of every workflow instance stream."""

STARTED: Final = PREFIX + "started"
STEP_COMPLETED: Final = PREFIX + "step_completed"
STEP_FAILED: Final = PREFIX + "step_failed"
TIMER_STARTED: Final = PREFIX + "timer_started"
TIMER_FIRED: Final = PREFIX + "timer_fired"
WAIT_STARTED: Final = PREFIX + "wait_started"
WAIT_MATCHED: Final = PREFIX + "wait_matched"
WAIT_TIMED_OUT: Final = PREFIX + "wait_timed_out"
SIDE_EFFECT: Final = PREFIX + "side_effect"
EVENT_EMITTED: Final = PREFIX + "event_emitted"
CHILD_STARTED: Final = PREFIX + "child_started"
CHILD_FINISHED: Final = PREFIX + "child_finished"
CANCEL_REQUESTED: Final = PREFIX + "cancel_requested"
COMPENSATION_STARTED: Final = PREFIX + "compensation_started"
COMPENSATION_STEP_COMPLETED: Final = PREFIX + "compensation_step_completed"
COMPENSATION_STEP_FAILED: Final = PREFIX + "compensation_step_failed"
TRANSITIONED: Final = PREFIX + "transitioned"
TRANSITION_REJECTED: Final = PREFIX + "transition_rejected"
COMPLETED: Final = PREFIX + "completed"
FAILED: Final = PREFIX + "failed"
COMPENSATED: Final = PREFIX + "compensated"
CANCELLED: Final = PREFIX + "cancelled"
REDRIVEN: Final = PREFIX + "redriven"
CLAIMED: Final = PREFIX + "claimed"
BLOCKED: Final = PREFIX + "blocked"
MIGRATED: Final = PREFIX + "migrated"
PATCHED: Final = PREFIX + "patched"
TRIGGER_ABSORBED: Final = PREFIX + "trigger_absorbed"
FORKED: Final = PREFIX + "forked"


class WorkflowStatus(enum.StrEnum):
    """Where a workflow instance is. The values are the words the API and CLI show."""

    RUNNING = "running"
    WAITING = "waiting"
    SLEEPING = "sleeping"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    """Cannot continue (its code diverged, or its version is gone): waits for an operator."""


TERMINAL_STATUSES: Final = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.CANCELLED,
    }
)
"""Statuses after which an instance never runs again (unless redriven, for ``failed``)."""

_TERMINAL_TYPES: Final = {
    COMPLETED: WorkflowStatus.COMPLETED,
    FAILED: WorkflowStatus.FAILED,
    COMPENSATED: WorkflowStatus.COMPENSATED,
    CANCELLED: WorkflowStatus.CANCELLED,
}


def stream_name(workflow_id: str) -> str:
    """The history stream of instance ``workflow_id``."""
    return STREAM_PREFIX + workflow_id


def public_stream(workflow_id: str) -> str:
    """The ordinary stream where an instance's public events (completed...) are appended."""
    return "workflow-" + workflow_id


def workflow_id_of(stream: str) -> str | None:
    """The instance id of a history stream name, or None if it is not one."""
    return stream[len(STREAM_PREFIX) :] if stream.startswith(STREAM_PREFIX) else None


_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def fast_id() -> str:
    """A UUIDv7-shaped id from a seeded PRNG instead of ``os.urandom``.

    History events are numerous and internal; their ids must be unique, not unguessable,
    and ``os.urandom`` costs tens of microseconds per call on some virtual machines.
    """
    ms = time.time_ns() // 1_000_000
    bits = _rng.getrandbits(74)
    value = (
        (ms << 80) | (0x7 << 76) | ((bits >> 62) << 64) | (0b10 << 62) | (bits & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def history_event(kind: str, data: dict[str, Any], workflow_id: str) -> Event:
    """A history event of type ``contexten.workflow.{kind}`` for instance ``workflow_id``."""
    return Event(
        type=PREFIX + kind,
        source="contexten.workflows",
        subject=workflow_id,
        data=data,
        id=fast_id(),
    )


def error_info(error: BaseException) -> dict[str, Any]:
    """The JSON form of an exception as history records it: type, message, non_retryable."""
    cls = type(error)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(error),
        "non_retryable": bool(getattr(error, "non_retryable", False)),
    }


@dataclass(slots=True)
class Op:
    """What the history says about one durable call (by ``seq``).

    ``kind`` is ``step``, ``sleep``, ``wait``, ``now``/``uuid4``/``random``, ``emit``,
    ``child`` or ``transition``; ``name`` is what replay compares (the step name, the wait
    pattern, the event type...). ``done`` says the call finished; then ``ok`` tells whether it
    returned ``result`` or failed with ``error``.
    """

    kind: str
    name: str
    done: bool = False
    ok: bool = True
    result: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    fire_at: datetime | None = None
    deadline: datetime | None = None
    child_id: str | None = None
    position: int = 0


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event of an instance's history, as shown by ``get_workflow(...).history``."""

    version: int
    position: int
    recorded_at: datetime
    type: str
    data: Mapping[str, Any]

    @property
    def kind(self) -> str:
        """The type without the ``contexten.workflow.`` prefix (``step_completed``...)."""
        return self.type.removeprefix(PREFIX)


@dataclass(slots=True)
class WorkflowState:
    """An instance's state: the fold of its history stream.

    Attributes mirror the ``started`` event (name, version, input...), then what happened
    since: the recorded ops by ``seq``, the status, the result or error, compensation
    progress and, for state machines, the current state.
    """

    workflow_id: str
    name: str = ""
    version: str = ""
    kind: str = "function"
    input: Any = None
    input_is_event: bool = False
    trigger_event_id: str | None = None
    parent_id: str | None = None
    after: int = 0
    status: WorkflowStatus = WorkflowStatus.RUNNING
    result: Any = None
    error: dict[str, Any] | None = None
    parked: bool = False
    ops: dict[int, Op] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    cancel_requested: bool = False
    cancel_reason: str | None = None
    compensating: bool = False
    compensation_reason: str | None = None
    compensations_done: set[int] = field(default_factory=set)
    compensation_failures: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed_seq: int | None = None
    sm_state: str | None = None
    reserved_seq: int = 0
    run: int = 1
    previous_run: dict[str, Any] | None = None
    trigger_fence: int = 0
    patches: dict[str, int] = field(default_factory=dict)
    blocked_reason: str | None = None
    blocked_from: WorkflowStatus | None = None
    owner: str | None = None
    last_position: int = 0
    stream_version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    entries: list[HistoryEntry] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        """Whether the stream held a ``started`` event."""
        return self.stream_version > 0

    @property
    def terminal(self) -> bool:
        """Whether the instance has ended (completed, failed, compensated, cancelled)."""
        return self.status in TERMINAL_STATUSES

    @property
    def blocked(self) -> bool:
        """Whether the instance is ``blocked`` (waiting for an operator)."""
        return self.status is WorkflowStatus.BLOCKED

    @property
    def run_key(self) -> str:
        """What the run's idempotency keys and child ids start with: the id for run 1,
        ``{id}#{run}`` for later runs (so a new run never reuses an earlier run's effects)."""
        return self.workflow_id if self.run <= 1 else f"{self.workflow_id}#{self.run}"

    @property
    def max_seq(self) -> int:
        """The highest recorded call number (0: none)."""
        return max(self.ops, default=0)

    @property
    def current_step(self) -> str | None:
        """What the instance is at, as far as the history tells."""
        if self.terminal:
            return None
        if self.kind == "state_machine":
            return self.sm_state
        for seq in sorted(self.ops, reverse=True):
            op = self.ops[seq]
            if not op.done or op.kind in ("step", "wait", "sleep", "child"):
                return f"{op.kind}:{op.name}" if op.name else op.kind
        return None

    def input_value(self) -> Any:
        """The input as the workflow function receives it (an :class:`Event` if it was one)."""
        if self.input_is_event:
            return msgspec.convert(self.input, Event)
        return self.input


def fold(records: Iterable[RecordedEvent], workflow_id: str | None = None) -> WorkflowState:
    """Fold an instance's history stream into its :class:`WorkflowState`.

    Unknown event types are kept in ``entries`` but otherwise ignored, so newer engines may add
    types without breaking older readers.
    """
    state = WorkflowState(workflow_id or "")
    for rec in records:
        apply(state, rec)
    return state


def apply(state: WorkflowState, rec: RecordedEvent) -> None:
    """Apply one recorded history event to ``state`` in place."""
    ev = rec.event
    data = ev.data
    state.stream_version = rec.version
    state.updated_at = rec.recorded_at
    state.entries.append(HistoryEntry(rec.version, rec.position, rec.recorded_at, ev.type, data))
    handler = _APPLY.get(ev.type)
    if handler is not None:
        handler(state, data, rec)


def _new_run(s: WorkflowState) -> None:
    """Forget the previous run's state (a ``started`` after a terminal event)."""
    fresh = WorkflowState(s.workflow_id)
    for f in fields(WorkflowState):
        if f.name not in ("workflow_id", "stream_version", "updated_at", "trigger_fence"):
            setattr(s, f.name, getattr(fresh, f.name))


def _started(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    if s.name:
        entry = s.entries[-1]
        _new_run(s)
        s.entries.append(entry)
    s.workflow_id = d.get("workflow_id", s.workflow_id) or rec.stream[len(STREAM_PREFIX) :]
    s.name = d.get("name", "")
    s.version = str(d.get("version", ""))
    s.kind = d.get("kind", "function")
    s.input = d.get("input")
    s.input_is_event = bool(d.get("input_is_event", False))
    s.trigger_event_id = d.get("trigger_event_id")
    s.parent_id = d.get("parent_id")
    after = d.get("after")
    s.after = int(after) if after is not None else rec.position
    s.trigger_fence = max(s.trigger_fence, s.after)
    s.run = int(d.get("run", 1))
    s.previous_run = d.get("previous_run")
    s.created_at = rec.recorded_at
    s.sm_state = d.get("initial")
    s.owner = d.get("owner")
    if s.kind == "state_machine":
        s.status = WorkflowStatus.WAITING


def _op(s: WorkflowState, d: dict[str, Any], kind: str, name: str) -> Op:
    seq = int(d["seq"])
    op = s.ops.get(seq)
    if op is None:
        op = s.ops[seq] = Op(kind, name)
    return op


def _step_completed(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "step", d.get("name", ""))
    op.done, op.ok, op.result, op.error = True, True, d.get("result"), None
    if s.kind == "state_machine" and not s.terminal:
        s.status = WorkflowStatus.WAITING
    else:
        _running(s)


def _step_failed(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "step", d.get("name", ""))
    op.done, op.ok, op.error = True, False, d.get("error")
    op.attempts = int(d.get("attempts", 0))


def _timer_started(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "sleep", "")
    op.fire_at = datetime.fromisoformat(d["fire_at"])
    if not s.compensating:
        s.status = WorkflowStatus.SLEEPING


def _timer_fired(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    _op(s, d, "sleep", "").done = True
    _running(s)


def _wait_started(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, d.get("kind", "wait"), d.get("pattern", ""))
    deadline = d.get("deadline")
    op.deadline = datetime.fromisoformat(deadline) if deadline else None
    if not s.compensating:
        s.status = WorkflowStatus.WAITING


def _wait_matched(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "wait", "")
    op.done, op.ok, op.result = True, True, d.get("event")
    op.position = int(d.get("position", 0))
    event_id = (d.get("event") or {}).get("id")
    if event_id:
        s.consumed.add(event_id)
    _running(s)


def _wait_timed_out(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "wait", "")
    op.done, op.ok, op.error = True, False, {"type": "timeout", "message": "timed out"}
    _running(s)


def _side_effect(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, d.get("kind", "side_effect"), "")
    op.done, op.result = True, d.get("value")


def _event_emitted(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "emit", d.get("type", ""))
    op.done, op.result = True, d.get("event_id")


def _child_started(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "child", d.get("name", ""))
    op.child_id = d.get("child_id")
    if not s.compensating:
        s.status = WorkflowStatus.WAITING


def _child_finished(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    op = _op(s, d, "child", d.get("name", ""))
    op.done = True
    op.ok = d.get("status") == WorkflowStatus.COMPLETED
    op.result = d.get("result")
    op.error = {"status": d.get("status"), "error": d.get("error")}
    _running(s)


def _cancel_requested(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    if not s.terminal:
        s.cancel_requested = True
        s.cancel_reason = d.get("reason")


def _compensation_started(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    s.compensating = True
    s.compensation_reason = d.get("reason")
    s.error = d.get("error")
    s.status = WorkflowStatus.COMPENSATING


def _compensation_step_completed(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    seq = int(d["seq"])
    s.compensations_done.add(seq)
    s.compensation_failures.pop(seq, None)


def _compensation_step_failed(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    s.compensation_failures[int(d["seq"])] = d.get("error") or {}


def _transitioned(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    seq = int(d["seq"])
    op = s.ops.setdefault(seq, Op("transition", d.get("to", "")))
    op.done, op.result, op.position = True, d.get("to"), int(d.get("position", 0))
    s.sm_state = d.get("to")
    if d.get("action"):
        s.reserved_seq = max(s.reserved_seq, seq + 1)  # the action's call number
    s.last_position = max(s.last_position, op.position)
    status = WorkflowStatus.RUNNING if d.get("action") else WorkflowStatus.WAITING
    if s.status is WorkflowStatus.BLOCKED:
        s.blocked_from = status  # decided while blocked: still blocked, resumes from here
    else:
        s.status = status


def _transition_rejected(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    s.last_position = max(s.last_position, int(d.get("position", 0)))


def _terminal(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    if s.terminal:
        return
    s.status = _TERMINAL_TYPES[rec.event.type]
    if "result" in d:
        s.result = d["result"]
    if d.get("error") is not None:
        s.error = d["error"]
    s.parked = bool(d.get("parked", False))
    failed_seq = d.get("failed_seq")
    s.failed_seq = int(failed_seq) if failed_seq is not None else None


def _unblock(s: WorkflowState) -> None:
    s.blocked_reason = None
    s.error = s.error if s.compensating else None
    s.status = s.blocked_from or WorkflowStatus.RUNNING  # waiting, sleeping... as it was
    s.blocked_from = None


def _redriven(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    if s.status is WorkflowStatus.BLOCKED:
        _unblock(s)
        return
    if s.status is not WorkflowStatus.FAILED:
        return
    s.compensation_failures.clear()
    if s.failed_seq is not None:
        op = s.ops.get(s.failed_seq)
        if op is not None and op.kind == "step" and not op.ok:
            del s.ops[s.failed_seq]
    s.failed_seq = None
    s.parked = False
    s.error = s.error if s.compensating else None
    s.status = WorkflowStatus.COMPENSATING if s.compensating else WorkflowStatus.RUNNING


def _claimed(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    s.owner = d.get("owner")


def _blocked(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    if s.terminal:
        return
    s.blocked_from = s.status
    s.status = WorkflowStatus.BLOCKED
    s.blocked_reason = d.get("reason")
    s.error = d.get("error")


def _migrated(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    if s.status is not WorkflowStatus.BLOCKED:
        return
    s.version = str(d.get("to_version", s.version))
    point = d.get("point")
    if point is not None and int(point) < s.max_seq:
        _supersede(s, int(point))
    _unblock(s)


def _supersede(s: WorkflowState, point: int) -> None:
    """Forget the calls after ``point`` (a migration's last compatible call): the new
    version makes its own from there. Their events stay in the history."""
    for seq in [q for q in s.ops if q > point]:
        op = s.ops.pop(seq)
        if op.kind == "wait" and op.done and op.ok and isinstance(op.result, dict):
            s.consumed.discard(str(op.result.get("id")))  # the new code may wait for it
    s.patches = {k: v for k, v in s.patches.items() if v <= point}
    if s.failed_seq is not None and s.failed_seq > point:
        s.failed_seq = None
    s.blocked_from = None  # whatever it was doing after the point: it runs again from there


def _patched(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    s.patches.setdefault(str(d.get("patch_id")), int(d.get("seq", 0)))


def _trigger_absorbed(s: WorkflowState, d: dict[str, Any], rec: RecordedEvent) -> None:
    s.trigger_fence = max(s.trigger_fence, int(d.get("position", 0)))


def _running(s: WorkflowState) -> None:
    if not s.terminal:
        s.status = WorkflowStatus.COMPENSATING if s.compensating else WorkflowStatus.RUNNING


_APPLY: Final = {
    STARTED: _started,
    STEP_COMPLETED: _step_completed,
    STEP_FAILED: _step_failed,
    TIMER_STARTED: _timer_started,
    TIMER_FIRED: _timer_fired,
    WAIT_STARTED: _wait_started,
    WAIT_MATCHED: _wait_matched,
    WAIT_TIMED_OUT: _wait_timed_out,
    SIDE_EFFECT: _side_effect,
    EVENT_EMITTED: _event_emitted,
    CHILD_STARTED: _child_started,
    CHILD_FINISHED: _child_finished,
    CANCEL_REQUESTED: _cancel_requested,
    COMPENSATION_STARTED: _compensation_started,
    COMPENSATION_STEP_COMPLETED: _compensation_step_completed,
    COMPENSATION_STEP_FAILED: _compensation_step_failed,
    TRANSITIONED: _transitioned,
    TRANSITION_REJECTED: _transition_rejected,
    COMPLETED: _terminal,
    FAILED: _terminal,
    COMPENSATED: _terminal,
    CANCELLED: _terminal,
    REDRIVEN: _redriven,
    CLAIMED: _claimed,
    BLOCKED: _blocked,
    MIGRATED: _migrated,
    PATCHED: _patched,
    TRIGGER_ABSORBED: _trigger_absorbed,
}
