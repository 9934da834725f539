"""``contexten subscriptions list|reset``: replaying history into a handler from a point."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from contexten import App, Event
from contexten.cli import cli
from contexten.clock import WallClock
from contexten.store import create_store

from ._audit import audit_events

HANG_GUARD = 30


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _app(url: str, seen: list[int]) -> App:
    app = App(url, clock=WallClock(), checkpoint_interval=0.01)

    @app.on("chores.*", name="counter")
    async def counter(event: Event, ctx: object) -> None:
        seen.append(int(event.data["n"]))

    return app


async def _until(seen: list[int], want: list[int]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while sorted(seen) != want:  # noqa: ASYNC110 - polling a handler's list
            await asyncio.sleep(0.02)


def test_reset_replays_from_a_position_or_a_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'subs.db'}"
    seen: list[int] = []

    async def first_run() -> str:
        async with _app(url, seen) as app:
            for n in range(4):
                await app.publish(
                    Event(type="chores.due", source="t", subject=f"c{n}", data={"n": n})
                )
            await _until(seen, [0, 1, 2, 3])
            rec = await app.store.read_all(limit=1000)
            second = [r for r in rec if r.event.type == "chores.due"][1]
            await app.drain(HANG_GUARD)
        return second.recorded_at.isoformat()

    at = asyncio.run(first_run())
    listed = [
        json.loads(line)
        for line in invoke("subscriptions", "list", "--store", url, "--json").output.splitlines()
    ]
    counter = next(row for row in listed if row["name"] == "counter")
    assert counter["lag"] == 0
    assert counter["held"] == 0  # the app stopped and handed its partitions back

    done = invoke("subscriptions", "reset", "counter", "--store", url, "--to", "0")
    assert done.exit_code == 0, done.output
    assert "reset to position 0" in done.output

    async def second_run(want: list[int]) -> None:
        seen.clear()
        async with _app(url, seen) as app:
            await _until(seen, want)
            await app.drain(HANG_GUARD)
            await asyncio.sleep(0.1)
            assert sorted(seen) == want  # nothing more than the replayed span

    asyncio.run(second_run([0, 1, 2, 3]))
    # From a time: only what was recorded after it.
    done = invoke("subscriptions", "reset", "counter", "--store", url, "--to", at)
    assert done.exit_code == 0, done.output
    asyncio.run(second_run([2, 3]))
    audits = [a for a in audit_events(url) if a["type"] == "contexten.audit.subscriptions.reset"]
    assert [(a["target"], a["outcome"]) for a in audits] == [("counter", "done")] * 2


def test_reset_refuses_bad_targets_and_unknown_subscriptions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'subs.db'}"

    async def setup() -> None:
        async with create_store(url) as store:
            await store.ensure_partitions("sub:known", 2, position=0)
            await store.append("s", [Event(type="t.x", source="t")])

    asyncio.run(setup())
    unknown = invoke("subscriptions", "reset", "nope", "--store", url, "--to", "0")
    assert unknown.exit_code == 1
    assert "no subscription named 'nope'" in unknown.output
    past = invoke("subscriptions", "reset", "known", "--store", url, "--to", "99")
    assert past.exit_code == 1
    assert "past the log's head" in past.output
    bad = invoke("subscriptions", "reset", "known", "--store", url, "--to", "soon")
    assert bad.exit_code == 1
    assert "ISO 8601" in bad.output
    outcomes = [a["outcome"] for a in audit_events(url)]
    assert outcomes == ["not found", "refused"]


def test_reset_with_running_workers_needs_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTEXTEN_HEARTBEAT_SECONDS", "0.1")
    monkeypatch.setenv("CONTEXTEN_LEASE_SECONDS", "1")
    url = f"sqlite:///{tmp_path / 'subs.db'}"
    seen: list[int] = []

    async def scenario() -> tuple[Result, Result]:
        async with _app(url, seen) as app:
            for n in range(3):
                await app.publish(
                    Event(type="chores.due", source="t", subject=f"c{n}", data={"n": n})
                )
            await _until(seen, [0, 1, 2])
            refused = await asyncio.to_thread(
                invoke, "subscriptions", "reset", "counter", "--store", url, "--to", "0"
            )
            await asyncio.sleep(0.3)
            assert sorted(seen) == [0, 1, 2]  # nothing moved
            forced = await asyncio.to_thread(
                invoke, "subscriptions", "reset", "counter", "--store", url, "--to", "0", "--force"
            )
            # The running worker notices at its next heartbeat and replays from 0.
            await _until(seen, [0, 0, 1, 1, 2, 2])
        return refused, forced

    refused, forced = asyncio.run(scenario())
    assert refused.exit_code == 1
    assert "held by running workers" in refused.output
    assert forced.exit_code == 0, forced.output
    outcomes = [
        a["outcome"]
        for a in audit_events(url)
        if a["type"] == "contexten.audit.subscriptions.reset"
    ]
    assert outcomes == ["refused", "done"]
