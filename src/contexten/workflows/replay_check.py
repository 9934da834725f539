"""Check before you deploy: replay stored workflow histories against new workflow code.

:func:`check_replays` reads every function-workflow instance in a store that is still open
(running, waiting, sleeping, compensating, blocked), and every one that closed within a
window, folds its history, picks the registered version of the new code that instance would
run on, and replays the history against it (:func:`~contexten.workflows.replay.replay_state`:
nothing runs for real). Each disagreement is a :class:`Divergence`: the instance, its version,
the first call and history event that differ, what the history recorded and what the code
asked for. A divergence of an *open* instance is breaking: deployed, that code would block it.
Closed instances are checked too because they are the best sample of what open ones will do.

``contexten replay check`` prints the report and exits non-zero when anything breaks;
:func:`contexten.testing.check_replays` is the same for a project's own test suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from contexten.exceptions import NondeterminismError, WorkflowCancelled
from contexten.store.base import EventStore, StreamInfo
from contexten.workflows.history import STREAM_PREFIX, WorkflowState, fold, workflow_id_of
from contexten.workflows.replay import replay_state

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["Divergence", "ReplayReport", "check_replays"]

_CHUNK = 256


@dataclass(frozen=True, slots=True)
class Divergence:
    """One instance whose history the new code does not reproduce.

    Attributes:
        workflow_id: the instance.
        name: its workflow.
        version: the version it runs on.
        status: its status in the store (``waiting``, ``completed``...).
        open: whether it is still open (then the divergence breaks it when deployed).
        reason: ``nondeterminism``, ``raises`` (the new code raises while replaying),
            or ``version_not_registered`` (the new code lacks the instance's version).
        seq: the first durable call that differs (0 when not about one call).
        event_type: the first history event that differs (``contexten.workflow.step_completed``).
        event_version: its version in the instance's stream.
        expected: what the history recorded there.
        produced: what the new code asked for.
        message: the whole explanation.
    """

    workflow_id: str
    name: str
    version: str
    status: str
    open: bool
    reason: str
    seq: int
    event_type: str | None
    event_version: int | None
    expected: str | None
    produced: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "open": self.open,
            "reason": self.reason,
            "seq": self.seq,
            "event_type": self.event_type,
            "event_version": self.event_version,
            "expected": self.expected,
            "produced": self.produced,
            "message": self.message,
        }


@dataclass(slots=True)
class ReplayReport:
    """What :func:`check_replays` found.

    Attributes:
        checked: histories replayed.
        open_checked: of which open instances.
        skipped: instances not checked, by why (``state_machine``, ``closed_before_window``,
            ``workflow_not_registered``).
        divergences: every instance the new code does not reproduce.
    """

    checked: int = 0
    open_checked: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def breaking(self) -> list[Divergence]:
        """The divergences of open instances: deploying would block these."""
        return [d for d in self.divergences if d.open]

    @property
    def ok(self) -> bool:
        """True when no open instance would break."""
        return not self.breaking

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "open_checked": self.open_checked,
            "skipped": dict(self.skipped),
            "breaking": len(self.breaking),
            "divergences": [d.to_dict() for d in self.divergences],
        }


def _first_event(state: WorkflowState, seq: int) -> tuple[str | None, int | None]:
    superseded = {  # by a migration: their call numbers are the old version's
        v
        for e in state.entries
        if e.kind == "migrated"
        for v in e.data.get("superseded_events") or ()
    }
    for entry in state.entries:
        if entry.version in superseded:
            continue
        recorded = entry.data.get("seq")
        if isinstance(recorded, int) and recorded >= seq:
            return entry.type, entry.version
    last = state.entries[-1] if state.entries else None
    return (last.type, last.version) if last else (None, None)


def _divergence(
    state: WorkflowState, reason: str, message: str, *, seq: int = 0, **details: str | None
) -> Divergence:
    event_type, event_version = _first_event(state, seq) if seq else (None, None)
    return Divergence(
        workflow_id=state.workflow_id,
        name=state.name,
        version=state.version or "1",
        status=str(state.status),
        open=not state.terminal,
        reason=reason,
        seq=seq,
        event_type=event_type,
        event_version=event_version,
        expected=details.get("expected"),
        produced=details.get("produced"),
        message=message,
    )


async def check_state(engine: WorkflowEngine, state: WorkflowState) -> Divergence | None:
    """Replay one folded history against ``engine``'s code; the divergence, or None."""
    definition = engine.definition_for(state)
    if definition is None:
        registered = ", ".join(engine.versions(state.name)) or "none"
        return _divergence(
            state,
            "version_not_registered",
            f"version {state.version or '1'} of {state.name!r} is not registered in the new "
            f"code (registered: {registered}); the instance would be blocked",
        )
    try:
        outcome = await replay_state(definition.fn, state)
    except NondeterminismError as e:
        return _divergence(
            state, "nondeterminism", str(e), seq=e.seq, expected=e.expected, produced=e.produced
        )
    error = outcome.error
    if (
        error is not None
        and not isinstance(error, WorkflowCancelled)
        and not state.terminal
        and not state.compensating
    ):
        return _divergence(
            state,
            "raises",
            f"the new code raises {type(error).__name__}: {error} while replaying call "
            f"#{outcome.calls}, where the history carries on",
            seq=outcome.calls,
            expected="the recorded history",
            produced=f"raise {type(error).__name__}",
        )
    return None


async def check_replays(
    store: EventStore,
    engine: WorkflowEngine,
    *,
    closed_since: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay every open instance, and every one closed at or after ``closed_since`` (None:
    every closed one), against the workflows registered on ``engine`` (a new app's
    ``app.workflows``; it need not be started).

    Args:
        store: the store holding the histories (opened by the caller).
        engine: where the new code is registered.
        closed_since: the window of closed instances to check too.
        progress: called with (done, total) as streams are read.

    Returns:
        The report; ``report.ok`` is False when an open instance would break.
    """
    streams = await store.list_streams(STREAM_PREFIX, limit=10**9)
    report = ReplayReport()
    total = len(streams)
    for i in range(0, total, _CHUNK):
        chunk: list[StreamInfo] = streams[i : i + _CHUNK]
        batches = await asyncio.gather(*(store.read_stream(s.stream) for s in chunk))
        for info, records in zip(chunk, batches, strict=True):
            state = fold(records, workflow_id_of(info.stream))
            why = _skip(engine, state, closed_since)
            if why is not None:
                report.skipped[why] = report.skipped.get(why, 0) + 1
                continue
            report.checked += 1
            report.open_checked += 0 if state.terminal else 1
            divergence = await check_state(engine, state)
            if divergence is not None:
                report.divergences.append(divergence)
        if progress is not None:
            progress(min(i + _CHUNK, total), total)
    return report


def _skip(engine: WorkflowEngine, state: WorkflowState, since: datetime | None) -> str | None:
    if not state.exists:
        return "empty"
    if state.kind != "function":
        return "state_machine"
    if state.terminal and since is not None and (state.updated_at or since) < since:
        return "closed_before_window"
    if state.terminal and not engine.versions(state.name):
        return "workflow_not_registered"  # (an open one is reported: it would be stranded)
    return None
