"""The ``platform_health`` read model: per platform, traffic in and out and recent errors.

Folded from the log: webhooks received (``github.*``, ``linear.*``, ``slack.*``,
``codegen.*``), our own actions (``contexten.action.<platform>.*``) and dead letters whose
failed event came from, or whose error was raised by, a platform. The live parts (circuit
breaker state, rate-limit budgets) are process state, not events: the API merges them from
the running app's agents (``App.health().agents``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from contexten.bus.dead_letters import PARKED
from contexten.projections.base import Projection, ProjectionBatch, Table
from contexten.store.base import RecordedEvent

__all__ = ["PLATFORMS", "PLATFORM_HEALTH", "PlatformHealthProjection", "row_to_dict"]

PLATFORMS: Final = ("github", "linear", "slack", "codegen")
_RECENT: Final = 10

PLATFORM_HEALTH: Final = Table(
    "platform_health",
    {
        "platform": "text",
        "webhooks": "int",
        "last_webhook_at": "time",
        "actions": "int",
        "last_action_at": "time",
        "errors": "int",
        "last_error_at": "time",
        "recent_errors": "json",
    },
    key=("platform",),
)


def _platform_of_error(data: dict[str, Any]) -> str | None:
    event_type = str(data.get("event_type", ""))
    head = event_type.split(".", 1)[0]
    if head in PLATFORMS:
        return head
    if event_type.startswith("contexten.action."):
        part = event_type.split(".")[2]
        return part if part in PLATFORMS else None
    return None


class PlatformHealthProjection(Projection):
    """Per platform: webhooks, actions, dead letters (with the last few errors)."""

    name = "platform_health"
    tables = (PLATFORM_HEALTH,)
    patterns = (*(f"{p}.**" for p in PLATFORMS), "contexten.action.**", PARKED)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Count the webhook, action or error against its platform."""
        event = record.event
        head = event.type.split(".", 1)[0]
        if head in PLATFORMS:
            row = await self._row(batch, head)
            row["webhooks"] += 1
            row["last_webhook_at"] = record.recorded_at
        elif event.type.startswith("contexten.action."):
            platform = event.type.split(".")[2]
            if platform not in PLATFORMS:
                return
            row = await self._row(batch, platform)
            row["actions"] += 1
            row["last_action_at"] = record.recorded_at
        else:
            found = _platform_of_error(event.data)
            if found is None:
                return
            row = await self._row(batch, found)
            row["errors"] += 1
            row["last_error_at"] = record.recorded_at
            recent = {
                "at": record.recorded_at.isoformat(),
                "subscription": event.data.get("subscription"),
                "event_type": event.data.get("event_type"),
                "error_type": event.data.get("error_type"),
            }
            row["recent_errors"] = [recent, *row["recent_errors"]][:_RECENT]
        batch.put("platform_health", row)

    @staticmethod
    async def _row(batch: ProjectionBatch, platform: str) -> dict[str, Any]:
        return await batch.get("platform_health", platform) or {
            "platform": platform,
            "webhooks": 0,
            "actions": 0,
            "errors": 0,
            "recent_errors": [],
        }


def row_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the API shows it (times in ISO 8601)."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
