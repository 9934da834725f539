"""``contexten subscriptions``: where each subscription stands, and moving it back to replay.

``reset NAME --to POSITION|TIME`` moves every partition of subscription ``NAME`` to one log
position, so its handler is delivered every event after it again (after a bug fix, say).
A time means "everything recorded after it": the position of the last event recorded at or
before that time. Dead letters of the replayed span stay as they are (redrive or discard
them as usual); a replayed event that fails again is parked again.

Running workers: the reset is refused while any partition of the subscription is held by a
live lease (a worker is running it), because that worker would go on from where it was.
``--force`` resets anyway: it revokes every lease of the subscription and bumps each
partition's epoch, so the holders' in-flight checkpoints and emits are refused (fenced), they
notice at their next heartbeat (within ``CONTEXTEN_HEARTBEAT_SECONDS``), and whoever claims a
partition next starts from the new position. Either way the command is audited.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import click

from contexten.cli._common import audit, clean, echo_json, fail, run_async, store_option, with_store
from contexten.cli._time import TIME
from contexten.exceptions import PartitionsHeld
from contexten.projections.event_search import EventQuery
from contexten.projections.read_side import open_read_side
from contexten.store import EventStore
from contexten.store.base import PartitionLease

__all__ = ["subscriptions"]

_PREFIX = "sub:"


@click.group()
def subscriptions() -> None:
    """Subscriptions: their checkpoints, leases, and replays."""


def _summary(name: str, parts: list[PartitionLease], head: int) -> dict[str, Any]:
    low = min(p.position for p in parts)
    return {
        "name": name,
        "partitions": len(parts),
        "position": low,
        "furthest": max(p.position for p in parts),
        "lag": max(0, head - low),
        "held": sum(1 for p in parts if p.held),
        "owners": sorted({p.owner for p in parts if p.held and p.owner}),
    }


@subscriptions.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_subscriptions(store_url: str | None, as_json: bool) -> None:
    """Each subscription that has run on the store: its position (every event up to it is
    done in all partitions), lag, and the partitions live workers hold."""

    async def body(store: EventStore) -> tuple[list[PartitionLease], int]:
        return await store.partitions(), await store.head()

    parts, head = await with_store(store_url, body)
    groups: dict[str, list[PartitionLease]] = defaultdict(list)
    for p in parts:
        if p.group.startswith(_PREFIX):
            groups[p.group[len(_PREFIX) :]].append(p)
    for name in sorted(groups):
        row = _summary(name, groups[name], head)
        if as_json:
            echo_json(row)
        else:
            click.echo(
                f"{clean(name):30} position={row['position']} lag={row['lag']} "
                f"partitions={row['partitions']} held={row['held']}"
            )
    if not groups and not as_json:
        click.echo("no subscription has run on this store", err=True)


def _target(text: str) -> int | datetime:
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        return int(raw)
    converted: datetime = TIME.convert(raw, None, None)
    return converted


async def _position_at(store: EventStore, when: datetime) -> int:
    """The position of the last event recorded at or before ``when`` (0: none was)."""
    async with open_read_side(store) as read:
        page = await read.events(EventQuery(as_of=when), limit=1)
    return page.events[0].position if page.events else 0


@subscriptions.command("reset")
@store_option
@click.argument("name")
@click.option(
    "--to",
    "to",
    required=True,
    help="A log position (every later event is delivered again; 0: all of them), or a "
    "time (ISO 8601: every event recorded after it).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Reset even while workers hold its partitions: their leases are revoked and they "
    "resume from the new position at their next heartbeat.",
)
@run_async
async def reset(store_url: str | None, name: str, to: str, force: bool) -> None:
    """Move subscription NAME back (or forward) to a position, in every partition."""
    try:
        target = _target(to)
    except click.BadParameter as e:
        fail(f"--to must be a log position or an ISO 8601 time: {e.message}")

    async def body(store: EventStore) -> tuple[int, int]:
        group = _PREFIX + name
        position = target if isinstance(target, int) else await _position_at(store, target)
        head = await store.head()
        if position > head:
            await audit(store, "subscriptions:reset", target=name, outcome="refused",
                        detail=f"position {position} is past the head {head}")  # fmt: skip
            fail(f"position {position} is past the log's head ({head})")
        try:
            parts = await store.reset_partitions(group, position, force=force)
        except PartitionsHeld as e:
            await audit(store, "subscriptions:reset", target=name, outcome="refused",
                        detail=f"held by {', '.join(e.owners)[:200]}")  # fmt: skip
            raise
        if not parts:
            if await store.get_checkpoint(group) is None:
                await audit(store, "subscriptions:reset", target=name, outcome="not found")
                fail(f"no subscription named {name!r} has run on this store")
            await store.save_checkpoint(group, position)  # one not partitioned yet
        detail = f"to {position}" + (" (forced)" if force else "")
        await audit(store, "subscriptions:reset", target=name, outcome="done", detail=detail)
        return position, head

    position, head = await with_store(store_url, body)
    click.echo(
        f"subscription {clean(name)} reset to position {position}: "
        f"{head - position} event(s) will be delivered again"
    )
