"""Migrating a blocked instance to another version from its last compatible point.

A blocked instance (its version is gone, or its code diverged) is moved to a registered
version ``N`` by :meth:`~contexten.workflows.WorkflowEngine.migrate_workflow`. The move is
planned by :func:`plan_migration`, which replays the instance's history against version
``N``'s code (nothing runs for real) and finds the *last compatible point*: the longest
prefix of recorded durable calls ``1..point`` that the new code makes the same way. The
instance then resumes on version ``N`` at call ``point + 1``: calls ``1..point`` replay from
the history and never run again; the recorded calls after the point are *superseded*.

Nothing is deleted. The move is one ``migrated`` history event (the marker) naming the
versions, the point, the superseded calls and the stream versions of their history events;
:func:`~contexten.workflows.history.fold` drops the superseded calls when it reaches the
marker, so every later replay of the instance (after a restart, ``replay check``, another
engine) follows the marker and agrees with what the migrated instance does.

Superseded calls that reached outside the instance are *effects*: a completed step (its
platform call was made), a failed step (its attempts may have made part of it), an emitted
event, a started child workflow. They are not undone, and a later compensation of the
migrated instance does not compensate them (its saga is the new code's). A migration that
would supersede effects is refused unless forced, and the plan lists them so the operator
knows what was already done. A call of the new code at the same call number and with the
same name as a superseded step gets the same idempotency key, so a platform that honours
keys makes that effect once.

An instance that was compensating is only migrated to a version that replays its whole
history (which compensations ran, and why, belongs to the code that started them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from contexten.exceptions import NondeterminismError
from contexten.store.base import RecordedEvent
from contexten.workflows.definition import WorkflowDefinition
from contexten.workflows.history import (
    PATCHED,
    WorkflowState,
    apply,
    history_event,
    stream_name,
)
from contexten.workflows.replay import replay_state

__all__ = ["MigrationPlan", "SupersededCall", "plan_migration"]

_EFFECT_KINDS: Final = frozenset({"step", "emit", "child"})


@dataclass(frozen=True, slots=True)
class SupersededCall:
    """One recorded durable call after the migration point, which the new code replaces.

    Attributes:
        seq: its call number.
        kind: ``step``, ``sleep``, ``wait``, ``emit``, ``child``, ``now``/``uuid4``/``random``.
        name: the step name, wait pattern, event type or child workflow.
        status: ``completed``, ``failed``, ``timed_out`` or ``in_flight`` (started, not done).
        effect: what it already did outside the instance (None: nothing, e.g. a wait).
        event_versions: the stream versions of its history events.
    """

    seq: int
    kind: str
    name: str
    status: str
    effect: str | None
    event_versions: tuple[int, ...] = ()

    def describe(self) -> str:
        """``#3 step 'publish' (completed)``."""
        what = f"{self.kind} {self.name!r}" if self.name else self.kind
        return f"#{self.seq} {what} ({self.status})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (as the marker records it)."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "effect": self.effect,
            "event_versions": list(self.event_versions),
        }


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """How a blocked instance would move to another version (see the module docstring).

    Attributes:
        workflow_id: the instance.
        name: its workflow.
        from_version: the version it ran on.
        to_version: the version it moves to.
        point: the last compatible call: calls ``1..point`` are kept, the instance resumes
            at call ``point + 1``.
        recorded_calls: how many calls its history recorded.
        superseded: the recorded calls after the point, in call order.
        divergence: where and why the new code parts from the history (None: it replays
            the whole history).
        compensating: whether the instance was compensating.
        superseded_markers: the stream versions of ``patched`` markers recorded after the
            point (the new code decides those patches afresh).
    """

    workflow_id: str
    name: str
    from_version: str
    to_version: str
    point: int
    recorded_calls: int
    superseded: tuple[SupersededCall, ...] = ()
    divergence: str | None = None
    compensating: bool = False
    superseded_markers: tuple[int, ...] = ()

    @property
    def resumes_at(self) -> int:
        """The first call the new code makes live."""
        return self.point + 1

    @property
    def effects(self) -> list[SupersededCall]:
        """The superseded calls that already did something outside the instance."""
        return [c for c in self.superseded if c.effect is not None]

    @property
    def complete(self) -> bool:
        """True when the new code replays the whole history (nothing is superseded)."""
        return not self.superseded

    @property
    def refusal(self) -> str | None:
        """Why the move must not happen even when forced (None: it may)."""
        if self.compensating and not self.complete:
            return (
                f"it was compensating, and version {self.to_version} replays only "
                f"{self.point} of its {self.recorded_calls} call(s); only a version that "
                "replays its whole history can take over a compensation (or cancel it)"
            )
        return None

    def marker_data(self, *, forced: bool) -> dict[str, Any]:
        """The data of the ``migrated`` history event that records this move."""
        data: dict[str, Any] = {"from_version": self.from_version, "to_version": self.to_version}
        data["point"] = self.point
        if self.superseded:
            data["superseded"] = [c.to_dict() for c in self.superseded]
            data["superseded_events"] = sorted(
                {v for c in self.superseded for v in c.event_versions}
                | set(self.superseded_markers)
            )
            data["divergence"] = self.divergence
            data["forced"] = forced
        return data

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``--json`` output)."""
        return {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "point": self.point,
            "resumes_at": self.resumes_at,
            "recorded_calls": self.recorded_calls,
            "divergence": self.divergence,
            "superseded": [c.to_dict() for c in self.superseded],
            "effects": [c.to_dict() for c in self.effects],
            "refusal": self.refusal,
        }


async def plan_migration(state: WorkflowState, definition: WorkflowDefinition) -> MigrationPlan:
    """Plan moving the instance ``state`` onto ``definition`` (a registered version).

    Replays the history against the new code to find the last compatible point, then
    replays the history *as the marker would leave it* to verify that the new code resumes
    from there without diverging. Records nothing.

    Raises:
        NondeterminismError: the new code diverges even from the history cut at the point
            (it makes different calls on replays that agree; not expected of a
            deterministic workflow).
    """
    point, divergence = await _compatible_point(state, definition)
    plan = MigrationPlan(
        workflow_id=state.workflow_id,
        name=state.name,
        from_version=state.version,
        to_version=definition.version,
        point=point,
        recorded_calls=state.max_seq,
        superseded=_superseded(state, point),
        divergence=divergence,
        compensating=state.compensating,
        superseded_markers=tuple(
            e.version
            for e in state.entries
            if e.type == PATCHED and int(e.data.get("seq", 0)) > point
        ),
    )
    if plan.refusal is None:
        await replay_state(definition.fn, _migrated_state(state, plan))
    return plan


def _migrated_state(state: WorkflowState, plan: MigrationPlan) -> WorkflowState:
    """A copy of ``state`` with ``plan``'s marker applied (what the fold will make of it)."""
    out = copy.deepcopy(state)
    marker = history_event("migrated", plan.marker_data(forced=True), state.workflow_id)
    apply(
        out,
        RecordedEvent(
            state.last_position,
            stream_name(state.workflow_id),
            state.stream_version + 1,
            datetime.now(UTC),
            marker,
        ),
    )
    return out


async def _compatible_point(
    state: WorkflowState, definition: WorkflowDefinition
) -> tuple[int, str | None]:
    """The last call the new code makes as recorded, and why it stops there (None: the
    whole history replays)."""
    try:
        outcome = await replay_state(definition.fn, state)
    except NondeterminismError as e:
        return max(min(e.seq - 1, state.max_seq), 0), str(e)
    if outcome.error is not None and outcome.calls < state.max_seq:
        error = outcome.error
        return outcome.calls, (
            f"version {definition.version} raises {type(error).__name__}: {error} after "
            f"call #{outcome.calls}, where the history carries on"
        )
    return state.max_seq, None


def _superseded(state: WorkflowState, point: int) -> tuple[SupersededCall, ...]:
    versions: dict[int, list[int]] = {}
    for entry in state.entries:
        seq = entry.data.get("seq")
        if isinstance(seq, int) and seq > point and not entry.type.endswith("patched"):
            versions.setdefault(seq, []).append(entry.version)
    calls: list[SupersededCall] = []
    for seq in sorted(s for s in state.ops if s > point):
        op = state.ops[seq]
        if not op.done:
            status = "in_flight"
        elif op.ok:
            status = "completed"
        else:
            status = "timed_out" if op.kind == "wait" else "failed"
        calls.append(
            SupersededCall(
                seq,
                op.kind,
                op.name,
                status,
                _effect(op.kind, op.name, status, op.attempts, op.child_id),
                tuple(versions.get(seq, ())),
            )
        )
    return tuple(calls)


def _effect(kind: str, name: str, status: str, attempts: int, child_id: str | None) -> str | None:
    if kind not in _EFFECT_KINDS:
        return None
    if kind == "step" and status == "completed":
        return f"step {name!r} completed: its effect was made"
    if kind == "step":
        return f"step {name!r} failed after {attempts} attempt(s): part of it may have been made"
    if kind == "emit":
        return f"event {name!r} was appended to the log (handlers may have acted on it)"
    return f"child workflow {name!r} ({child_id}) was started"
