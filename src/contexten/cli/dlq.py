"""``contexten dlq``: inspect, redrive and discard dead letters."""

from __future__ import annotations

import click

from contexten.bus.dead_letters import DeadLetter, DeadLetterQueue
from contexten.cli._common import (
    audit,
    clean,
    echo_json,
    fail,
    run_async,
    store_option,
    with_store,
)
from contexten.exceptions import DeadLetterNotFound
from contexten.projections.read_side import open_read_side
from contexten.store import EventStore

__all__ = ["dlq"]

_STATUSES = ["parked", "redriven", "discarded", "resolved", "all"]


@click.group()
def dlq() -> None:
    """Dead letters: events a handler kept failing on."""


@dlq.command("list")
@store_option
@click.option("--subscription", default=None, help="Only this subscription's letters.")
@click.option(
    "--status",
    type=click.Choice(_STATUSES),
    default="parked",
    show_default=True,
    help="Which letters to list.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@run_async
async def list_letters(
    store_url: str | None, subscription: str | None, status: str, as_json: bool
) -> None:
    """List dead letters, oldest first (from the ``dead_letters`` read model)."""

    async def body(store: EventStore) -> list[DeadLetter]:
        async with open_read_side(store) as read:
            return await read.all_dead_letters(subscription, None if status == "all" else status)

    letters = await with_store(store_url, body)
    for letter in letters:
        if as_json:
            echo_json(letter.to_dict())
        else:
            click.echo(
                f"{clean(letter.id)}  {letter.status.value:9} {clean(letter.subscription):30} "
                f"{clean(letter.event_type):32} attempts={letter.attempts} "
                f"{clean(letter.error_type)}: {clean(letter.error_message[:80])}"
            )
    if not as_json and not letters:
        click.echo("no dead letters", err=True)


@dlq.command("redrive")
@store_option
@click.argument("letter_id", required=False)
@click.option("--all", "redrive_all", is_flag=True, help="Redrive every parked letter.")
@click.option("--subscription", default=None, help="With --all: only this subscription's.")
@run_async
async def redrive(
    store_url: str | None, letter_id: str | None, redrive_all: bool, subscription: str | None
) -> None:
    """Send a parked letter's event back to its subscription (once)."""
    if bool(letter_id) == redrive_all:
        fail("give either a letter id or --all")

    async def body(store: EventStore) -> int:
        queue = DeadLetterQueue(store)
        if redrive_all:
            async with open_read_side(store) as read:
                letters = await read.all_dead_letters(subscription)
            done = sum([await queue.redrive(letter.id) for letter in letters])
            target = f"all of {subscription}" if subscription else "all"
            await audit(store, "dlq:redrive", target=target, outcome=f"redriven {done}")
            return done
        assert letter_id is not None
        try:
            done = 1 if await queue.redrive(letter_id) else 0
        except DeadLetterNotFound:
            await audit(store, "dlq:redrive", target=letter_id, outcome="not found")
            raise
        outcome = "redriven" if done else "unchanged"
        await audit(store, "dlq:redrive", target=letter_id, outcome=outcome)
        return done

    done = await with_store(store_url, body)
    if letter_id and not done:
        fail(f"dead letter {letter_id} is not parked (already redriven, discarded or resolved)")
    click.echo(f"redriven: {done}")


@dlq.command("discard")
@store_option
@click.argument("letter_id")
@run_async
async def discard(store_url: str | None, letter_id: str) -> None:
    """Give up on a parked letter; it stays in the store, marked discarded."""

    async def body(store: EventStore) -> bool:
        try:
            done = await DeadLetterQueue(store).discard(letter_id)
        except DeadLetterNotFound:
            await audit(store, "dlq:discard", target=letter_id, outcome="not found")
            raise
        outcome = "discarded" if done else "unchanged"
        await audit(store, "dlq:discard", target=letter_id, outcome=outcome)
        return done

    if not await with_store(store_url, body):
        fail(f"dead letter {letter_id} is not parked (already redriven, discarded or resolved)")
    click.echo(f"discarded: {clean(letter_id)}")
