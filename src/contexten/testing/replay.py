"""The replay checker: run recorded workflow histories (JSON) against the current code.

Keep the histories of your workflows' instances as JSON files beside your tests, and replay
them in CI: a code change that would break an in-flight instance (a step renamed, inserted or
removed, a wait moved) fails the test with a :class:`~contexten.exceptions.NondeterminismError`
instead of failing in production::

    from contexten.testing import Replayer, export_history

    history = await export_history(store, "order-42")       # from a store, once
    save_history(history, "tests/histories/order-42.json")

    replayer = Replayer({"order": order_workflow})          # in a test
    await replayer.replay_file("tests/histories/order-42.json")

The JSON form is ``{"workflow_id", "name", "version", "events": [{"version", "position",
"recorded_at", "event": <the event's JSON>}...]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from contexten.events.envelope import Event
from contexten.exceptions import WorkflowNotFound, WorkflowNotRegistered
from contexten.store.base import EventStore, RecordedEvent
from contexten.workflows.history import WorkflowState, fold, stream_name
from contexten.workflows.replay import ReplayOutcome, replay_state
from contexten.workflows.replay_check import ReplayReport
from contexten.workflows.replay_check import check_replays as _check_replays

__all__ = [
    "ReplayOutcome",
    "ReplayReport",
    "Replayer",
    "check_replays",
    "export_history",
    "history_from_json",
    "load_history",
    "save_history",
]


async def export_history(store: EventStore, workflow_id: str) -> dict[str, Any]:
    """The JSON-ready history of instance ``workflow_id``.

    Raises:
        WorkflowNotFound: no such instance.
    """
    records = await store.read_stream(stream_name(workflow_id))
    if not records:
        raise WorkflowNotFound(f"no workflow instance {workflow_id!r}")
    state = fold(records, workflow_id)
    return {
        "workflow_id": workflow_id,
        "name": state.name,
        "version": state.version,
        "events": [
            {
                "version": r.version,
                "position": r.position,
                "recorded_at": r.recorded_at.isoformat(),
                "event": msgspec.to_builtins(r.event),
            }
            for r in records
        ],
    }


def save_history(history: Mapping[str, Any], path: str | Path) -> None:
    """Write ``history`` as indented JSON (stable, diff-friendly)."""
    data = msgspec.json.format(msgspec.json.encode(history), indent=2)
    Path(path).write_bytes(data + b"\n")


def load_history(path: str | Path) -> dict[str, Any]:
    """Read a history written by :func:`save_history`."""
    value = msgspec.json.decode(Path(path).read_bytes())
    if not isinstance(value, dict) or "events" not in value:
        raise ValueError(f"{path}: not a workflow history (no 'events')")
    return value


def history_from_json(history: Mapping[str, Any]) -> WorkflowState:
    """Fold a JSON history back into a :class:`WorkflowState`."""
    wid = str(history["workflow_id"])
    stream = stream_name(wid)
    records = [
        RecordedEvent(
            int(item["position"]),
            stream,
            int(item["version"]),
            datetime.fromisoformat(item["recorded_at"]),
            msgspec.convert(item["event"], Event),
        )
        for item in history["events"]
    ]
    return fold(records, wid)


def _json_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


class Replayer:
    """Replays histories against workflow functions, by workflow name.

    Args:
        workflows: workflow functions by name, or anything with a ``definitions`` mapping of
            name to an object with ``fn`` (a :class:`~contexten.workflows.WorkflowEngine`).
    """

    def __init__(self, workflows: Mapping[str, Callable[..., Any]] | Any) -> None:
        self._engine: Any = None
        if isinstance(workflows, Mapping):
            self._fns: dict[str, Callable[..., Any]] = dict(workflows)
        else:
            self._fns = {name: d.fn for name, d in workflows.definitions.items()}
            if hasattr(workflows, "definition_for"):
                self._engine = workflows  # versions: each history on its own version

    async def replay(self, history: Mapping[str, Any]) -> ReplayOutcome:
        """Replay one JSON history.

        Raises:
            NondeterminismError: the current code diverges from the history.
            WorkflowNotRegistered: no function for the history's workflow name.
        """
        state = history_from_json(history)
        fn = self._fns.get(state.name)
        if self._engine is not None and fn is not None:
            definition = self._engine.definition_for(state)
            if definition is None:
                raise WorkflowNotRegistered(
                    f"no version {state.version or '1'} of workflow {state.name!r} to replay"
                )
            fn = definition.fn
        if fn is None:
            raise WorkflowNotRegistered(f"no workflow named {state.name!r} to replay")
        return await replay_state(fn, state)

    async def replay_file(self, path: str | Path) -> ReplayOutcome:
        """Replay the history stored at ``path``."""
        return await self.replay(load_history(path))

    async def replay_dir(self, directory: str | Path) -> dict[str, ReplayOutcome]:
        """Replay every ``*.json`` history in ``directory``; outcomes by file name."""
        out: dict[str, ReplayOutcome] = {}
        for path in _json_files(Path(directory)):
            out[path.name] = await self.replay_file(path)
        return out


async def check_replays(
    store: EventStore, app: Any, *, closed_since: datetime | None = None
) -> ReplayReport:
    """What ``contexten replay check`` does, for a project's own test suite: replay every
    open instance in ``store`` (and those closed since ``closed_since``; None: all) against
    the workflows of ``app`` (an :class:`~contexten.App` or a workflow engine)::

        report = await check_replays(store_with_recorded_instances, new_app)
        assert report.ok, report.breaking
    """
    engine = getattr(app, "workflows", app)
    return await _check_replays(store, engine, closed_since=closed_since)
