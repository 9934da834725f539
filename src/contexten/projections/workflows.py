"""The ``workflows`` read model: one row per workflow instance, for listing without folding.

Each history event of a ``$wf-`` stream updates its instance's row with the same fold the
engine uses (:func:`contexten.workflows.history.apply`), from a compact copy of the fold's
state kept in the row (``fold``): the status, the call records the current step is read
from, compensation, and the state machine's state. Results, inputs and whole histories are
not copied; ``contexten workflows show`` still reads those from the instance's stream.

Beside the rows, ``workflow_version_counts`` holds how many instances each (workflow,
version, kind, status) has, moved in the same batch as the rows (an instance that changes
status or is migrated to another version leaves one count for the other), so the versions
page and ``GET /api/v1/workflow-versions`` read a handful of counters instead of every open
instance's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from contexten.projections.base import Projection, ProjectionBatch, Query, Table
from contexten.store.base import RecordedEvent
from contexten.workflows.history import (
    PREFIX,
    TERMINAL_STATUSES,
    Op,
    WorkflowState,
    WorkflowStatus,
    apply,
    workflow_id_of,
)

__all__ = [
    "ACTIVE_STATUSES",
    "WORKFLOWS",
    "WORKFLOW_VERSION_COUNTS",
    "WorkflowsProjection",
    "list_page",
    "row_to_dict",
]

WORKFLOWS: Final = Table(
    "workflows",
    {
        "workflow_id": "text",
        "name": "text",
        "key": "text",
        "version": "text",
        "kind": "text",
        "status": "text",
        "current_step": "text",
        "state": "text",
        "parked": "bool",
        "error": "json",
        "created_at": "time",
        "updated_at": "time",
        "ended_at": "time",
        "stream_version": "int",
        "run": "int",
        "blocked_reason": "text",
        "fold": "json",
    },
    key=("workflow_id",),
    # Each listing's index ends with the key: it is the order's tie-breaker (keyset pages),
    # and an index that covers the whole order lets the first page stop after ``limit`` rows.
    indexes=(
        ("status", "updated_at", "workflow_id"),
        ("name", "updated_at", "workflow_id"),
        ("updated_at", "workflow_id"),
    ),
)

WORKFLOW_VERSION_COUNTS: Final = Table(
    "workflow_version_counts",
    {"name": "text", "version": "text", "kind": "text", "status": "text", "n": "int"},
    key=("name", "version", "kind", "status"),
)
"""Instances per (workflow, version, kind, status); a version the instance's history names
none for counts as ``"1"`` (what the engine assumes)."""

_CountKey = tuple[str, str, str, str]

ACTIVE_STATUSES: Final = tuple(s.value for s in WorkflowStatus if s not in TERMINAL_STATUSES)
"""Statuses of instances that have not ended (the engine resumes these)."""

_ANCHORS: Final = frozenset({"step", "wait", "sleep", "child"})
_MAX_ERROR: Final = 2000


def _compact_ops(ops: dict[int, Op]) -> dict[int, Op]:
    """The calls the current step can still be read from: the last finished step, wait,
    sleep or child and everything after it (and the one before, for a redrive that drops
    a failed step)."""
    anchors = [
        seq for seq in sorted(ops, reverse=True) if ops[seq].done and ops[seq].kind in _ANCHORS
    ]
    floor = anchors[1] if len(anchors) > 1 else (anchors[0] if anchors else 0)
    return {seq: op for seq, op in ops.items() if seq >= floor}


def _dump(state: WorkflowState) -> dict[str, Any]:
    return {
        "workflow_id": state.workflow_id,
        "name": state.name,
        "version": state.version,
        "kind": state.kind,
        "status": state.status.value,
        "compensating": state.compensating,
        "cancel_requested": state.cancel_requested,
        "failed_seq": state.failed_seq,
        "sm_state": state.sm_state,
        "parked": state.parked,
        "error": state.error,
        "created_at": state.created_at.isoformat() if state.created_at else None,
        "run": state.run,
        "blocked_reason": state.blocked_reason,
        "blocked_from": state.blocked_from.value if state.blocked_from else None,
        "ops": {
            str(seq): [op.kind, op.name, op.done, op.ok]
            for seq, op in _compact_ops(state.ops).items()
        },
    }


def _load(fold: dict[str, Any], workflow_id: str) -> WorkflowState:
    state = WorkflowState(workflow_id)
    state.name = fold["name"]
    state.version = fold["version"]
    state.kind = fold["kind"]
    state.status = WorkflowStatus(fold["status"])
    state.compensating = fold["compensating"]
    state.cancel_requested = fold["cancel_requested"]
    state.failed_seq = fold["failed_seq"]
    state.sm_state = fold["sm_state"]
    state.parked = fold["parked"]
    state.error = fold["error"]
    state.run = int(fold.get("run") or 1)
    state.blocked_reason = fold.get("blocked_reason")
    blocked_from = fold.get("blocked_from")
    state.blocked_from = WorkflowStatus(blocked_from) if blocked_from else None
    created = fold.get("created_at")
    state.created_at = datetime.fromisoformat(created) if created else None
    for seq, (kind, name, done, ok) in fold["ops"].items():
        state.ops[int(seq)] = Op(kind, name, done=done, ok=ok)
    return state


def _key_of(workflow_id: str, name: str) -> str:
    prefix = f"{name}:"
    return workflow_id[len(prefix) :] if workflow_id.startswith(prefix) else workflow_id


def _error(error: Any) -> Any:
    if not isinstance(error, dict):
        return error
    out = dict(error)
    if isinstance(out.get("message"), str):
        out["message"] = out["message"][:_MAX_ERROR]
    return out


def _count_key(name: str, version: str | None, kind: str | None, status: str) -> _CountKey:
    return (name, version or "1", kind or "function", status)


async def _bump(batch: ProjectionBatch, key: _CountKey, delta: int) -> None:
    """Move one (workflow, version, kind, status) counter by ``delta`` (a zero is deleted)."""
    row = await batch.get("workflow_version_counts", *key)
    n = (row["n"] if row else 0) + delta
    if n:
        name, version, kind, status = key
        batch.put(
            "workflow_version_counts",
            {"name": name, "version": version, "kind": kind, "status": status, "n": n},
        )
    else:
        batch.delete("workflow_version_counts", *key)


@dataclass(slots=True)
class _Folding:
    """An instance being folded in the current batch (written once, at the flush).

    ``counted`` is the counter the stored row is in (None: no row yet), so the flush moves
    the instance from it to the counter of its new (version, status).
    """

    state: WorkflowState
    created_at: datetime | None
    ended_at: datetime | None
    counted: _CountKey | None = None
    last: RecordedEvent | None = None


class WorkflowsProjection(Projection):
    """One row per instance: name, key, status, version, times, current step, failure; and
    instances per (workflow, version, kind, status).

    Within a batch each instance is folded in memory and its row written once (in
    :meth:`flush`), however many of its events the batch holds. :meth:`apply` only collects
    the batch's history events; :meth:`flush` reads every instance row they touch in one
    go, folds them in log order, then reads the counters it moves in one go, so a batch
    costs the same few reads whatever its size (a round trip each, on PostgreSQL).
    """

    name = "workflows"
    tables = (WORKFLOWS, WORKFLOW_VERSION_COUNTS)
    version = 2  # 2: the version counts (tables written by 1 are rebuilt)
    patterns = (PREFIX + "**",)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Keep one history event for :meth:`flush` to fold."""
        workflow_id = workflow_id_of(record.stream)
        if workflow_id is None:
            return  # a public workflow event (workflow-{id} stream), not history
        pending: list[tuple[str, RecordedEvent]] = batch.scratch.setdefault("workflow_events", [])
        pending.append((workflow_id, record))

    async def _fold(self, workflow_id: str, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Fold one history event into its instance's state."""
        folding: dict[str, _Folding] = batch.scratch.setdefault("workflows", {})
        entry = folding.get(workflow_id)
        if entry is None:
            row = await batch.get("workflows", workflow_id)
            if row is None:
                entry = _Folding(WorkflowState(workflow_id), None, None)
            else:
                entry = _Folding(
                    _load(row["fold"], workflow_id),
                    row["created_at"],
                    row["ended_at"],
                    _count_key(row["name"], row["version"], row["kind"], row["status"]),
                )
            folding[workflow_id] = entry
        apply(entry.state, record)
        entry.state.entries.clear()  # the row keeps no history; the stream has it
        entry.last = record
        if entry.created_at is None:
            entry.created_at = entry.state.created_at or record.recorded_at
        if entry.state.status not in TERMINAL_STATUSES:
            entry.ended_at = None
        elif entry.ended_at is None:
            entry.ended_at = record.recorded_at

    async def flush(self, batch: ProjectionBatch) -> None:
        """Fold the batch's history events, write each instance once, move its counter."""
        events: list[tuple[str, RecordedEvent]] = batch.scratch.pop("workflow_events", [])
        await batch.prefetch("workflows", ((workflow_id,) for workflow_id, _ in events))
        for workflow_id, record in events:
            await self._fold(workflow_id, record, batch)
        folding: dict[str, _Folding] = batch.scratch.get("workflows", {})
        moves: list[tuple[_CountKey | None, _CountKey]] = []
        for workflow_id, entry in folding.items():
            state, last = entry.state, entry.last
            if not state.name or last is None:
                continue  # history without a ``started`` event: not an instance
            batch.put(
                "workflows",
                {
                    "workflow_id": workflow_id,
                    "name": state.name,
                    "key": _key_of(workflow_id, state.name),
                    "version": state.version,
                    "kind": state.kind,
                    "status": state.status.value,
                    "current_step": state.current_step,
                    "state": state.sm_state,
                    "parked": state.parked,
                    "error": _error(state.error),
                    "created_at": entry.created_at,
                    "updated_at": last.recorded_at,
                    "ended_at": entry.ended_at,
                    "stream_version": last.version,
                    "run": state.run,
                    "blocked_reason": state.blocked_reason,
                    "fold": _dump(state),
                },
            )
            counted = _count_key(state.name, state.version, state.kind, state.status.value)
            if counted != entry.counted:
                moves.append((entry.counted, counted))
        await batch.prefetch(
            "workflow_version_counts",
            {k for move in moves for k in move if k is not None},
        )
        for old, new in moves:
            if old is not None:
                await _bump(batch, old, -1)
            await _bump(batch, new, 1)


def row_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the API and CLI show it (times in ISO 8601, without the fold)."""
    out = {k: v for k, v in row.items() if k != "fold"}
    for k in ("created_at", "updated_at", "ended_at"):
        if isinstance(out.get(k), datetime):
            out[k] = out[k].isoformat()
    return out


def list_page(
    *,
    status: str | None = None,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: list[Any] | None = None,
    limit: int = 100,
) -> Query:
    """The query for a page of instances, newest update first (``after``: the cursor)."""
    where: dict[str, Any] = {}
    if status is not None:
        where["status"] = WorkflowStatus(status).value
    if name is not None:
        where["name"] = name
    return Query(
        where=where,
        since=("updated_at", since) if since is not None else None,
        until=("updated_at", until) if until is not None else None,
        order=("-updated_at",),
        after=after,
        limit=limit,
    )
