"""Reading and steering workflow instances straight from the store (API, CLI, dashboard).

These functions need only an :class:`~contexten.store.base.EventStore`, not a running
engine: the store is the source of truth. A cancellation or redrive requested here is an
event in the instance's stream; the engine that runs the instance sees it (it tails the log)
and acts on it, and an engine starting later picks it up on recovery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contexten.exceptions import WorkflowNotFound, WrongExpectedVersion
from contexten.store.base import EventStore
from contexten.workflows.history import (
    STREAM_PREFIX,
    WorkflowState,
    WorkflowStatus,
    fold,
    history_event,
    stream_name,
)

__all__ = [
    "WorkflowInfo",
    "get_workflow_info",
    "list_workflows",
    "load_state",
    "request_cancel",
    "request_redrive",
]

_MAX_TRIES = 20


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A snapshot of one workflow instance, folded from its history.

    Attributes:
        workflow_id: the instance id.
        name: the workflow (or state machine) name.
        version: the workflow version it started with.
        kind: ``function`` or ``state_machine``.
        status: one of :class:`WorkflowStatus` (a ``str``).
        result: the result, once ``completed``.
        error: the error (``type``, ``message``...) once failed, compensated or cancelled.
        current_step: what it is at (``step:charge``, ``wait:github.push``, a machine's state).
        parked: True when it stopped on a nondeterminism error (redrive after fixing code).
        state: a state machine's current state.
        run: the run number of this id (2, 3... after earlier runs closed).
        previous_run: the run before (its ``run``, ``status``, ``version``), if any.
        blocked_reason: why it is ``blocked`` (``nondeterminism``, ``version_not_registered``).
        created_at: when it started.
        updated_at: when its history last grew.
        history: the history events (only filled by :func:`get_workflow_info`).
    """

    workflow_id: str
    name: str
    version: str
    kind: str
    status: WorkflowStatus
    result: Any = None
    error: Mapping[str, Any] | None = None
    current_step: str | None = None
    parked: bool = False
    state: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    history: list[Any] = field(default_factory=list)
    run: int = 1
    previous_run: Mapping[str, Any] | None = None
    blocked_reason: str | None = None

    @classmethod
    def from_state(
        cls, state: WorkflowState, *, current: str | None = None, history: bool = True
    ) -> WorkflowInfo:
        """Build the snapshot of ``state`` (``current`` overrides the step, from a live run)."""
        return cls(
            workflow_id=state.workflow_id,
            name=state.name,
            version=state.version,
            kind=state.kind,
            status=state.status,
            result=state.result,
            error=state.error,
            current_step=current or state.current_step,
            parked=state.parked,
            state=state.sm_state,
            created_at=state.created_at,
            updated_at=state.updated_at,
            history=list(state.entries) if history else [],
            run=state.run,
            previous_run=state.previous_run,
            blocked_reason=state.blocked_reason,
        )

    def to_dict(self, *, with_history: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (for ``--json`` output and the HTTP API)."""
        out: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "status": str(self.status),
            "current_step": self.current_step,
            "state": self.state,
            "result": self.result,
            "error": dict(self.error) if self.error is not None else None,
            "parked": self.parked,
            "run": self.run,
            "previous_run": dict(self.previous_run) if self.previous_run else None,
            "blocked_reason": self.blocked_reason,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
        if with_history:
            out["history"] = [
                {
                    "version": h.version,
                    "position": h.position,
                    "recorded_at": h.recorded_at.isoformat(),
                    "type": h.kind,
                    "data": dict(h.data),
                }
                for h in self.history
            ]
        return out


async def load_state(
    store: EventStore, workflow_id: str, *, as_of: datetime | None = None
) -> WorkflowState | None:
    """The folded state of instance ``workflow_id`` (as it was at ``as_of``, if given), or
    None if it did not exist."""
    records = await store.read_stream(stream_name(workflow_id), as_of=as_of)
    if not records:
        return None
    return fold(records, workflow_id)


async def get_workflow_info(
    store: EventStore, workflow_id: str, *, as_of: datetime | None = None
) -> WorkflowInfo:
    """The snapshot of instance ``workflow_id``, with its history (as of ``as_of``: the
    history recorded up to then, folded).

    Raises:
        WorkflowNotFound: no such instance (then).
    """
    state = await load_state(store, workflow_id, as_of=as_of)
    if state is None:
        raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
    return WorkflowInfo.from_state(state)


async def list_workflows(
    store: EventStore,
    status: WorkflowStatus | str | None = None,
    *,
    name: str | None = None,
    limit: int | None = None,
) -> list[WorkflowInfo]:
    """Snapshots (without history) of the instances, in id order, optionally filtered.

    Raises:
        ValueError: ``status`` is not a known status word.
    """
    wanted = WorkflowStatus(status) if status is not None else None
    out: list[WorkflowInfo] = []
    for info in await store.list_streams(STREAM_PREFIX, limit=10**9):
        state = fold(await store.read_stream(info.stream), info.stream[len(STREAM_PREFIX) :])
        if not state.exists or (wanted is not None and state.status is not wanted):
            continue
        if name is not None and state.name != name:
            continue
        out.append(WorkflowInfo.from_state(state, history=False))
        if limit is not None and len(out) >= limit:
            break
    return out


async def _append_control(
    store: EventStore, workflow_id: str, kind: str, data: dict[str, Any], allowed: Any
) -> bool:
    for _ in range(_MAX_TRIES):
        state = await load_state(store, workflow_id)
        if state is None:
            raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
        if not allowed(state):
            return False
        event = history_event(kind, data, workflow_id)
        try:
            await store.append(
                stream_name(workflow_id), [event], expected_version=state.stream_version
            )
        except WrongExpectedVersion:
            continue
        return True
    return False


async def request_cancel(
    store: EventStore, workflow_id: str, reason: str = "cancelled by request"
) -> bool:
    """Ask for instance ``workflow_id`` to be cancelled. False if it had already ended.

    The engine running the instance compensates its completed steps and ends it
    ``cancelled``; a sleep or wait is interrupted, a running step finishes first.

    Raises:
        WorkflowNotFound: no such instance.
    """
    return await _append_control(
        store,
        workflow_id,
        "cancel_requested",
        {"reason": reason},
        lambda s: not s.terminal and not s.cancel_requested,
    )


async def request_redrive(store: EventStore, workflow_id: str) -> bool:
    """Ask for a ``failed`` or ``blocked`` instance to run again. False if it is neither.

    A failed compensation is retried (the ones that succeeded are not run again); a parked
    or blocked instance is re-executed with the current code of its version; a workflow that
    failed on a step with nothing to compensate retries that step.

    Raises:
        WorkflowNotFound: no such instance.
    """
    return await _append_control(
        store,
        workflow_id,
        "redriven",
        {},
        lambda s: s.status in (WorkflowStatus.FAILED, WorkflowStatus.BLOCKED),
    )
