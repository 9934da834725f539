"""A click parameter type for ``--as-of`` times (ISO 8601; UTC when no offset is given)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import click

__all__ = ["TIME", "TIME_HELP", "TimeParam"]

TIME_HELP: Final = "As it was at this time (ISO 8601, e.g. 2026-12-03T14:00; UTC unless an offset)."


class TimeParam(click.ParamType):  # type: ignore[type-arg]
    """An aware datetime from ISO 8601 text (naive times are taken as UTC)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-03T14:00:00Z)", param, ctx)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


TIME: Final = TimeParam()
