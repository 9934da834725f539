"""Durable schedules: one run per tick across engines, overlap and catch-up policies, the
operator's requests, and cron's corner cases (DST, 29 February)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contexten.events import Event
from contexten.exceptions import ConfigurationError
from contexten.testing import VirtualClock
from contexten.workflows import WorkflowEngine
from contexten.workflows.schedules import (
    Schedule,
    fold_schedule,
    request_backfill,
    request_pause,
    request_trigger,
)

from .conftest import Env, until

START = datetime(2030, 1, 1, tzinfo=UTC)
EVERY = timedelta(minutes=5)


def scheduled(engine: WorkflowEngine, **options: Any) -> None:
    @engine.workflow("report")
    async def report(wf: Any, _: Any) -> str:
        if options.get("hold"):
            await wf.wait_for("report.release")
        return "done"

    settings: dict[str, Any] = {"every": EVERY, "workflow": "report"}
    settings.update({k: v for k, v in options.items() if k != "hold"})
    engine.schedule(Schedule("report", **settings))


async def runs(engine: WorkflowEngine) -> list[str]:
    return sorted(i.workflow_id for i in await engine.list_workflows(name="report"))


async def state_of(engine: WorkflowEngine) -> Any:
    return fold_schedule(await engine.store.read_stream("$schedule-report"))


async def settle(engine: WorkflowEngine, expected: int) -> None:
    await until(lambda: _count(engine, expected))


async def _count(engine: WorkflowEngine, expected: int) -> bool:
    return len(await runs(engine)) >= expected


async def test_one_run_per_tick_across_three_engines(env: Env) -> None:
    clock = VirtualClock(START)
    engines = [await env.engine(scheduled, clock=clock) for _ in range(3)]
    await until(lambda: _registered(engines[0]))
    for _ in range(4):
        await clock.advance(EVERY)
        await asyncio.sleep(0.05)  # let every engine's scheduler race for the tick
    await settle(engines[0], 4)
    await asyncio.sleep(0.2)
    ids = await runs(engines[0])
    assert ids == [f"sched:report:{(START + EVERY * n).isoformat()}" for n in range(1, 5)]
    state = await state_of(engines[0])
    assert state.ticked == 4
    assert sum(e.stats.schedule_ticks["report"] for e in engines) == 4
    await clock.aclose()


async def _registered(engine: WorkflowEngine) -> bool:
    return bool(await engine.store.read_stream("$schedule-report"))


async def test_a_restarted_engine_catches_up_the_last_tick_and_counts_the_rest(
    env: Env,
) -> None:
    clock = VirtualClock(START)
    engine = await env.engine(scheduled, clock=clock)
    await until(lambda: _registered(engine))
    await engine.stop()  # down for 32 minutes: 6 ticks pass
    await clock.advance(timedelta(minutes=32))
    engine = await env.restart(engine, scheduled, clock=clock)
    await settle(engine, 1)
    await asyncio.sleep(0.1)
    assert await runs(engine) == [f"sched:report:{(START + EVERY * 6).isoformat()}"]
    state = await state_of(engine)
    assert state.missed == 5
    assert engine.stats.schedule_missed["report"] == 5
    await clock.aclose()


async def test_catch_up_all_runs_the_missed_ticks_within_the_window(memory_env: Env) -> None:
    clock = VirtualClock(START)
    options = {"catch_up": "all", "catch_up_window": timedelta(minutes=12), "overlap": "allow_all"}
    engine = await memory_env.engine(lambda e: scheduled(e, **options), clock=clock)
    await until(lambda: _registered(engine))
    await engine.stop()
    await clock.advance(timedelta(minutes=31))
    engine = await memory_env.restart(engine, lambda e: scheduled(e, **options), clock=clock)
    await settle(engine, 3)
    await asyncio.sleep(0.1)
    assert len(await runs(engine)) == 3, "ticks at 20, 25 and 30 minutes: within 12 minutes"
    assert (await state_of(engine)).missed == 3
    await clock.aclose()


@pytest.mark.parametrize(
    ("overlap", "expected_runs", "skipped"), [("skip", 1, 2), ("buffer_one", 2, 1)]
)
async def test_a_tick_while_the_last_run_is_open_is_skipped_or_buffered(
    memory_env: Env, overlap: str, expected_runs: int, skipped: int
) -> None:
    clock = VirtualClock(START)
    engine = await memory_env.engine(
        lambda e: scheduled(e, hold=True, overlap=overlap), clock=clock
    )
    await until(lambda: _registered(engine))
    for _ in range(3):
        await clock.advance(EVERY)
        await asyncio.sleep(0.05)
    await settle(engine, 1)
    await engine.store.append("hold", [Event(type="report.release")])
    await asyncio.sleep(0.1)
    await clock.advance(timedelta(seconds=1))
    await settle(engine, expected_runs)
    await asyncio.sleep(0.1)
    assert len(await runs(engine)) == expected_runs
    state = await state_of(engine)
    assert state.skipped == skipped
    assert engine.stats.schedule_skipped["report"] == skipped
    await clock.aclose()


async def test_pause_resume_trigger_and_backfill(memory_env: Env) -> None:
    clock = VirtualClock(START)
    engine = await memory_env.engine(lambda e: scheduled(e, overlap="allow_all"), clock=clock)
    await until(lambda: _registered(engine))
    await request_pause(engine.store, "report", paused=True, at=clock.now())
    await clock.advance(EVERY * 2)
    await asyncio.sleep(0.1)
    assert await runs(engine) == [], "no tick fires while paused"

    request = await request_trigger(engine.store, "report")
    await clock.advance(timedelta(seconds=1))
    await settle(engine, 1)
    assert await runs(engine) == [f"sched:report:manual:{request}"], "trigger works paused"

    await request_pause(engine.store, "report", paused=False, at=clock.now())
    await clock.advance(EVERY)
    await settle(engine, 2)
    assert f"sched:report:{(START + EVERY * 3).isoformat()}" in await runs(engine)

    await request_backfill(engine.store, "report", START + EVERY, START + EVERY * 2)
    await clock.advance(timedelta(seconds=1))
    await settle(engine, 4)
    await asyncio.sleep(0.1)
    ids = await runs(engine)
    assert f"sched:report:{(START + EVERY).isoformat()}" in ids
    assert f"sched:report:{(START + EVERY * 2).isoformat()}" in ids
    assert len(ids) == 4, "the backfill ran the two ticks of the paused time"
    with pytest.raises(ConfigurationError):
        await request_trigger(engine.store, "nope")
    await clock.aclose()


def _ticks(cron: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    schedule = Schedule("t", cron=cron, timezone=tz, workflow="w")
    return schedule.ticks(start, start, end, 100)


def test_cron_through_daylight_saving_changes_fires_once_a_day() -> None:
    spring = _ticks(
        "30 2 * * *",
        "Europe/Berlin",
        datetime(2026, 3, 28, 12, tzinfo=UTC),
        datetime(2026, 3, 31, 12, tzinfo=UTC),
    )
    assert [t.isoformat() for t in spring] == [
        "2026-03-29T01:00:00+00:00",  # 02:30 does not exist that night: 03:00 CEST
        "2026-03-30T00:30:00+00:00",
        "2026-03-31T00:30:00+00:00",
    ]
    autumn = _ticks(
        "30 2 * * *",
        "Europe/Berlin",
        datetime(2026, 10, 24, 12, tzinfo=UTC),
        datetime(2026, 10, 26, 12, tzinfo=UTC),
    )
    assert [t.isoformat() for t in autumn] == [
        "2026-10-25T00:30:00+00:00",  # 02:30 happens twice that night: once
        "2026-10-26T01:30:00+00:00",
    ]


def test_cron_on_29_february_fires_in_leap_years_only() -> None:
    ticks = _ticks(
        "0 12 29 2 *", "UTC", datetime(2026, 1, 1, tzinfo=UTC), datetime(2033, 1, 1, tzinfo=UTC)
    )
    assert [t.year for t in ticks] == [2028, 2032]


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="cron"):
        Schedule("x", cron="61 * * * *", workflow="w")
    with pytest.raises(ConfigurationError, match="time zone"):
        Schedule("x", cron="0 9 * * *", timezone="Mars/Olympus", workflow="w")
    with pytest.raises(ConfigurationError, match="exactly one of cron"):
        Schedule("x", workflow="w")
    with pytest.raises(ConfigurationError, match="exactly one of workflow"):
        Schedule("x", every=EVERY)
