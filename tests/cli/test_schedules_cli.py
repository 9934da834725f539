"""``contexten schedules`` against a SQLite store where an engine registered a schedule."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from contexten.cli import cli
from contexten.store import create_store
from contexten.workflows import WorkflowEngine
from contexten.workflows.schedules import Schedule, fold_schedule


def _register(url: str) -> None:
    async def main() -> None:
        store = create_store(url)
        await store.open()
        engine = WorkflowEngine(store)

        @engine.workflow("nightly")
        async def nightly(wf: Any, _: Any) -> None:
            return None

        engine.schedule(Schedule("nightly", cron="0 2 * * *", workflow="nightly"))
        await engine.start()
        for _ in range(500):
            if await store.read_stream("$schedule-nightly"):
                break
            await asyncio.sleep(0.01)
        await engine.stop()
        await store.close()

    asyncio.run(main())


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    _register(url)
    return url


def _state(url: str) -> Any:
    async def read() -> Any:
        store = create_store(url)
        await store.open()
        try:
            return fold_schedule(await store.read_stream("$schedule-nightly"))
        finally:
            await store.close()

    return asyncio.run(read())


def test_requests_land_in_the_schedule_stream(store_url: str) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["schedules", "list", "--store", store_url, "--json"])
    assert listed.exit_code == 0, listed.output
    row = json.loads(listed.output.splitlines()[0])
    assert (row["name"], row["paused"], row["ticked"]) == ("nightly", False, 0)

    assert (
        runner.invoke(cli, ["schedules", "pause", "--store", store_url, "nightly"]).exit_code == 0
    )
    assert _state(store_url).paused
    assert (
        runner.invoke(cli, ["schedules", "resume", "--store", store_url, "nightly"]).exit_code == 0
    )
    assert not _state(store_url).paused
    fired = runner.invoke(cli, ["schedules", "trigger", "--store", store_url, "nightly"])
    assert "sched:nightly:manual:" in fired.output
    back = runner.invoke(
        cli, ["schedules", "backfill", "--store", store_url, "nightly", "--from", "3d"]
    )
    assert back.exit_code == 0, back.output
    state = _state(store_url)
    assert len(state.triggers) == 1
    (_, start, end) = state.backfills[0]
    assert end - start == timedelta(days=3)

    unknown = runner.invoke(cli, ["schedules", "trigger", "--store", store_url, "weekly"])
    assert unknown.exit_code == 1
    assert "no schedule 'weekly'" in unknown.output
