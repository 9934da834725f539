"""The ``work_items`` read model: for each correlation id, everything that touched it, in order.

A work item is what a correlation id names (a Linear issue, its branch and PR, its Slack
thread, its agent run). Its timeline holds, in log order:

* every event that carries the correlation id: inbound webhooks from every platform, our own
  actions (``contexten.action.*``), workflow lifecycle events, dead letters parked;
* the steps and transitions of workflow instances started by such an event (their history
  events carry no correlation id; the instance's ``started`` event names its input's).

Each entry keeps the event's id and its ``causation_id``, so a reader links an action to the
webhook that caused it and the echo to the action. Entries carry no payload text, only
type, source, subject and a short label (the logging rules' redaction holds by construction).

Retention (:mod:`contexten.store.retention`) may later drop an event's data: its entry stays,
and its label gets :data:`DATA_REMOVED`, either when the pruned event is folded (a rebuild)
or when the ``contexten.retention.pruned`` record naming it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from contexten.projections.base import Projection, ProjectionBatch, Query, Table
from contexten.store.base import RecordedEvent
from contexten.store.retention import RETENTION_PRUNED, RETENTION_STREAM, pruned_marker
from contexten.workflows.history import (
    CANCEL_REQUESTED,
    COMPENSATION_STARTED,
    STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    TRANSITIONED,
    WAIT_MATCHED,
    workflow_id_of,
)

__all__ = [
    "DATA_REMOVED",
    "WORK_ITEMS",
    "WORK_ITEM_ENTRIES",
    "WORK_ITEM_WORKFLOWS",
    "WorkItemsProjection",
    "entry_to_dict",
    "timeline_page",
]

WORK_ITEMS: Final = Table(
    "work_items",
    {
        "correlation_id": "text",
        "first_at": "time",
        "last_at": "time",
        "entries": "int",
        "sources": "json",
        "last_type": "text",
    },
    key=("correlation_id",),
    indexes=(("last_at",),),
)

WORK_ITEM_ENTRIES: Final = Table(
    "work_item_entries",
    {
        "correlation_id": "text",
        "position": "int",
        "event_id": "text",
        "type": "text",
        "kind": "text",
        "source": "text",
        "subject": "text",
        "label": "text",
        "causation_id": "text",
        "workflow_id": "text",
        "time": "time",
        "recorded_at": "time",
    },
    key=("correlation_id", "position"),
    indexes=(("event_id",),),
)

WORK_ITEM_WORKFLOWS: Final = Table(
    "work_item_workflows",
    {"workflow_id": "text", "correlation_id": "text"},
    key=("workflow_id",),
)

_HISTORY_SHOWN: Final = {
    STARTED: "workflow started",
    STEP_COMPLETED: "step completed",
    STEP_FAILED: "step failed",
    TRANSITIONED: "transitioned",
    WAIT_MATCHED: "wait matched",
    CANCEL_REQUESTED: "cancel requested",
    COMPENSATION_STARTED: "compensation started",
}
_MAX_LABEL: Final = 200
DATA_REMOVED: Final = "(data removed)"
"""Appended to the label of an entry whose event's data retention removed."""


def _kind(event_type: str) -> str:
    if event_type.startswith("contexten.action."):
        return "action"
    if event_type.startswith("contexten.workflow."):
        return "workflow"
    if event_type.startswith("contexten.dead_letter."):
        return "dead_letter"
    if event_type.startswith("contexten."):
        return "system"
    return "inbound"


def _history_label(event_type: str, data: dict[str, Any]) -> str:
    label = _HISTORY_SHOWN[event_type]
    if event_type == STARTED:
        return f"{label}: {data.get('name', '')}"
    if event_type == TRANSITIONED:
        return f"{label}: {data.get('source', '?')} -> {data.get('to', '?')}"
    if event_type in (STEP_COMPLETED, STEP_FAILED):
        return f"{label}: {data.get('name', '')}"
    return label


def _input_correlation(data: dict[str, Any]) -> str | None:
    value = data.get("input")
    if data.get("input_is_event") and isinstance(value, dict):
        found = value.get("correlation_id")
        return found if isinstance(found, str) and found else None
    return None


class WorkItemsProjection(Projection):
    """Timelines by correlation id: entries, a summary row, and instance -> work item.

    :meth:`apply` only sorts out the events that belong to a timeline (no reads);
    :meth:`flush` reads the instance links they need in one go, then the summary rows and
    pruned entries in one go, and adds the entries in log order, so a batch costs the same
    few reads whatever its size (a round trip each, on PostgreSQL).
    """

    name = "work_items"
    tables = (WORK_ITEMS, WORK_ITEM_ENTRIES, WORK_ITEM_WORKFLOWS)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Keep the event for :meth:`flush` if it belongs to a work item's timeline."""
        event = record.event
        kept: list[tuple[RecordedEvent, str | None]] = batch.scratch.setdefault(
            "work_item_events", []
        )
        if event.type == RETENTION_PRUNED and record.stream == RETENTION_STREAM:
            kept.append((record, None))
            return
        workflow_id = workflow_id_of(record.stream)
        if workflow_id is not None:
            if event.type in _HISTORY_SHOWN:
                kept.append((record, workflow_id))
        elif event.correlation_id is not None:
            kept.append((record, None))

    async def flush(self, batch: ProjectionBatch) -> None:
        """Add the kept events to their timelines, in log order."""
        kept: list[tuple[RecordedEvent, str | None]] = batch.scratch.pop("work_item_events", [])
        if not kept:
            return
        await batch.prefetch(
            "work_item_workflows",
            (
                (workflow_id,)
                for record, workflow_id in kept
                if workflow_id is not None and record.event.type != STARTED
            ),
        )
        # Which timeline each event joins (links first: a step follows its ``started``).
        resolved: list[tuple[RecordedEvent, str, str, str | None] | list[Any]] = []
        for record, workflow_id in kept:
            event = record.event
            if event.type == RETENTION_PRUNED and record.stream == RETENTION_STREAM:
                items = event.data.get("work_items")
                if isinstance(items, list):
                    resolved.append(items)
                continue
            correlation = event.correlation_id
            label = event.type
            if workflow_id is not None:
                if event.type == STARTED:
                    correlation = _input_correlation(event.data)
                    if correlation is None:
                        continue
                    batch.put(
                        "work_item_workflows",
                        {"workflow_id": workflow_id, "correlation_id": correlation},
                    )
                else:
                    link = await batch.get("work_item_workflows", workflow_id)
                    if link is None:
                        continue
                    correlation = link["correlation_id"]
                label = _history_label(event.type, event.data)
            elif correlation is None:
                continue
            elif event.type.startswith("contexten.workflow."):
                workflow_id = event.subject
            if pruned_marker(event) is not None:
                label = f"{label[: _MAX_LABEL - len(DATA_REMOVED) - 1]} {DATA_REMOVED}"
            resolved.append((record, correlation, label[:_MAX_LABEL], workflow_id))
        await batch.prefetch("work_items", ((r[1],) for r in resolved if isinstance(r, tuple)))
        await batch.prefetch(
            "work_item_entries",
            (
                (item[0], item[1])
                for r in resolved
                if isinstance(r, list)
                for item in r
                if isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
            ),
        )
        for r in resolved:
            if isinstance(r, list):
                await _mark_pruned(r, batch)
            else:
                await self._add(batch, *r)

    async def _add(
        self,
        batch: ProjectionBatch,
        record: RecordedEvent,
        correlation: str,
        label: str,
        workflow_id: str | None,
    ) -> None:
        event = record.event
        batch.put(
            "work_item_entries",
            {
                "correlation_id": correlation,
                "position": record.position,
                "event_id": event.id,
                "type": event.type,
                "kind": _kind(event.type),
                "source": event.source,
                "subject": event.subject,
                "label": label,
                "causation_id": event.causation_id,
                "workflow_id": workflow_id,
                "time": event.time,
                "recorded_at": record.recorded_at,
            },
        )
        item = await batch.get("work_items", correlation)
        sources = sorted({*(item["sources"] if item else []), event.source})
        batch.put(
            "work_items",
            {
                "correlation_id": correlation,
                "first_at": item["first_at"] if item else record.recorded_at,
                "last_at": record.recorded_at,
                "entries": (item["entries"] if item else 0) + 1,
                "sources": sources,
                "last_type": event.type,
            },
        )


async def _mark_pruned(items: Any, batch: ProjectionBatch) -> None:
    """Mark the entries a retention record names (``[correlation id, position]`` pairs)."""
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            continue
        correlation, position = item
        row = await batch.get("work_item_entries", correlation, position)
        if row is None or str(row["label"]).endswith(DATA_REMOVED):
            continue
        label = f"{str(row['label'])[: _MAX_LABEL - len(DATA_REMOVED) - 1]} {DATA_REMOVED}"
        batch.put("work_item_entries", {**row, "label": label})


def entry_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A timeline entry as the API shows it (times in ISO 8601)."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def timeline_page(correlation_id: str, *, after: int = 0, limit: int = 200) -> Query:
    """The query for a page of one work item's timeline, in log order after ``after``."""
    return Query(
        where={"correlation_id": correlation_id},
        order=("position",),
        after=[after, correlation_id] if after else None,
        limit=limit,
    )
