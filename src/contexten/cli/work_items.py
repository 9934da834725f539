"""``contexten work-items``: everything that touched a work item (a correlation id), in order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from contexten.cli._common import echo_json, fail, run_async, store_option, with_store
from contexten.cli._time import TIME, TIME_HELP
from contexten.projections.read_side import open_read_side
from contexten.store import EventStore

__all__ = ["work_items"]


@click.group("work-items")
def work_items() -> None:
    """Work items: timelines across GitHub, Linear, Slack, agent runs and workflows."""


@work_items.command("show")
@store_option
@click.argument("correlation_id")
@click.option("--as-of", "as_of", type=TIME, default=None, help=TIME_HELP)
@click.option("--limit", type=click.IntRange(1, 1000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def show(
    store_url: str | None, correlation_id: str, as_of: datetime | None, limit: int, as_json: bool
) -> None:
    """The timeline of CORRELATION_ID (e.g. ENG-123), oldest first, with causation links."""

    async def body(store: EventStore) -> list[dict[str, Any]]:
        async with open_read_side(store) as read:
            return (await read.timeline(correlation_id, limit=limit, as_of=as_of)).items

    entries = await with_store(store_url, body)
    if not entries:
        fail(f"nothing recorded for work item {correlation_id!r}" + (" by then" if as_of else ""))
    for e in entries:
        if as_json:
            echo_json(e)
        else:
            cause = f" <- {e['causation_id']}" if e["causation_id"] else ""
            click.echo(
                f"{e['position']:>8}  {e['recorded_at'][:19]}  {e['kind']:11} {e['label']}{cause}"
            )


@work_items.command("search")
@store_option
@click.argument("prefix")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@run_async
async def search(store_url: str | None, prefix: str, limit: int) -> None:
    """Work items whose correlation id starts with PREFIX."""

    async def body(store: EventStore) -> list[dict[str, Any]]:
        async with open_read_side(store) as read:
            return await read.search_work_items(prefix, limit=limit)

    for item in await with_store(store_url, body):
        click.echo(
            f"{item['correlation_id']:30} entries={item['entries']:<6} last={item['last_at'][:19]}"
        )
