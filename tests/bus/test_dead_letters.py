"""The dead-letter queue: list, get, redrive (once), discard, across store handles."""

from __future__ import annotations

import asyncio

import pytest

from contexten import Event, HandlerContext, RetryPolicy
from contexten.app import App
from contexten.bus import DeadLetterQueue, DeadLetterStatus
from contexten.exceptions import DeadLetterNotFound

from ._support import HANG_GUARD, Backend


class Switch:
    """A handler that fails while ``broken`` is set."""

    def __init__(self) -> None:
        self.broken = True
        self.calls: list[tuple[str, int, str]] = []

    async def __call__(self, event: Event, ctx: HandlerContext) -> None:
        self.calls.append((event.id, ctx.attempt, ctx.idempotency_key))
        if self.broken:
            raise RuntimeError("downstream is down")


def subscribe(app: App, switch: Switch, name: str = "fragile") -> None:
    app.on("test.ticked", retry=RetryPolicy.no_retries(), name=name)(switch)


def tick(n: int) -> Event:
    return Event(type="test.ticked", source="tests", data={"n": n})


async def test_redrive_delivers_again_once(backend: Backend) -> None:
    app = backend.test_app()
    switch = Switch()
    subscribe(app, switch)
    event = tick(1)
    async with app:
        await app.publish(event)
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
        switch.broken = False
        assert await app.dead_letters.redrive(letter.id) is True
        assert await app.dead_letters.redrive(letter.id) is False  # once only
        await app.drain(timeout=HANG_GUARD)
        after = await app.dead_letters.get(letter.id)
        assert await app.dead_letters.list() == []
        assert await app.dead_letters.redrive_all() == 0
    assert after.status is DeadLetterStatus.RESOLVED
    assert [(eid, attempt) for eid, attempt, _ in switch.calls] == [(event.id, 1), (event.id, 1)]
    assert {key for _, _, key in switch.calls} == {f"fragile:{event.id}"}


async def test_a_redrive_that_fails_again_parks_a_new_letter(backend: Backend) -> None:
    app = backend.test_app()
    switch = Switch()
    subscribe(app, switch)
    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [first] = await app.dead_letters.list()
        assert await app.dead_letters.redrive(first.id)
        await app.drain(timeout=HANG_GUARD)
        [second] = await app.dead_letters.list()
        everything = await app.dead_letters.list(status=None)
    assert second.id != first.id
    assert second.redriven_from == first.id
    assert second.event_id == first.event_id
    assert {(x.id, x.status) for x in everything} == {
        (first.id, DeadLetterStatus.REDRIVEN),
        (second.id, DeadLetterStatus.PARKED),
    }


async def test_discard(backend: Backend) -> None:
    app = backend.test_app()
    switch = Switch()
    subscribe(app, switch)
    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
        assert await app.dead_letters.discard(letter.id) is True
        assert await app.dead_letters.discard(letter.id) is False
        assert await app.dead_letters.redrive(letter.id) is False
        await app.drain(timeout=HANG_GUARD)
        assert await app.dead_letters.list() == []
        [gone] = await app.dead_letters.list(status="discarded")
        assert (await app.health()).dead_letters == 0
    assert gone.status is DeadLetterStatus.DISCARDED
    assert len(switch.calls) == 1


async def test_unknown_letter(backend: Backend) -> None:
    async with backend.store() as store:
        queue = DeadLetterQueue(store)
        with pytest.raises(DeadLetterNotFound):
            await queue.get("nope")
        with pytest.raises(DeadLetterNotFound):
            await queue.redrive("nope")
        with pytest.raises(DeadLetterNotFound):
            await queue.discard("nope")


async def test_two_queues_racing_redrive_one_letter(backend: Backend) -> None:
    app = backend.test_app()
    switch = Switch()
    subscribe(app, switch)
    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
        switch.broken = False
        async with backend.store() as one, backend.store() as two:
            results = await asyncio.gather(
                *(DeadLetterQueue(s).redrive(letter.id) for s in (one, two, one, two))
            )
        assert sorted(results) == [False, False, False, True]
        await app.drain(timeout=HANG_GUARD)
    assert len(switch.calls) == 2  # the original attempt and exactly one redelivery


async def test_list_filters_and_redrive_all(backend: Backend) -> None:
    app = backend.test_app()
    a, b = Switch(), Switch()
    subscribe(app, a, "sub-a")
    subscribe(app, b, "sub-b")
    async with app:
        for n in range(3):
            await app.publish(tick(n))
        await app.drain(timeout=HANG_GUARD)
        assert len(await app.dead_letters.list()) == 6
        assert len(await app.dead_letters.list("sub-a")) == 3
        letters = await app.dead_letters.list("sub-b")
        assert [x.position for x in letters] == sorted(x.position for x in letters)
        a.broken = False
        assert await app.dead_letters.redrive_all("sub-a") == 3
        await app.drain(timeout=HANG_GUARD)
        assert len(await app.dead_letters.list()) == 3
        assert {x.subscription for x in await app.dead_letters.list()} == {"sub-b"}
        assert len(await app.dead_letters.list(status=DeadLetterStatus.RESOLVED)) == 3
    assert len(b.calls) == 3


async def test_redrive_from_another_handle_while_the_app_runs(backend: Backend) -> None:
    """The CLI redrives from another process; the running dispatcher picks it up."""
    app = backend.test_app()
    switch = Switch()
    subscribe(app, switch)
    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        switch.broken = False
        async with backend.store() as other:
            assert await DeadLetterQueue(other).redrive_all() == 1
        await app.drain(timeout=HANG_GUARD)
    assert len(switch.calls) == 2


async def test_redrive_while_stopped_is_delivered_at_next_start(backend: Backend) -> None:
    switch = Switch()
    app = backend.test_app()
    subscribe(app, switch)
    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
    async with backend.store() as store:
        [letter] = await DeadLetterQueue(store).list()
        assert await DeadLetterQueue(store).redrive(letter.id)
    switch.broken = False
    again = backend.test_app()
    subscribe(again, switch)
    async with again:
        await again.drain(timeout=HANG_GUARD)
        assert (await again.dead_letters.get(letter.id)).status is DeadLetterStatus.RESOLVED
    assert len(switch.calls) == 2


async def test_letters_serialise_to_json_ready_dicts(backend: Backend) -> None:
    app = backend.test_app()
    subscribe(app, Switch())
    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
    data = letter.to_dict()
    assert data["status"] == "parked"
    assert data["error_message"] == "downstream is down"
    assert isinstance(data["first_failure_at"], str)
    assert letter.stream == f"$dlq-{letter.id}"
