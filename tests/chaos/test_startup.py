"""Starting up through a PostgreSQL outage, on a private cluster of this test's own.

- The server goes down while the workflow engine's start-up recovery reads the unfinished
  instances: the App stays up, the recovery is retried under the supervisor until the
  server is back, health is unready meanwhile, and the waiting instances resume (once each).
- The server is down when the App starts: ``start()`` retries opening the store within
  ``store_open_wait`` and carries on once it is up; past that it fails with a clear error.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from contexten import App, Event, Workflow
from contexten.exceptions import StoreUnavailable
from contexten.workflows.engine import RECOVERY_LOOP
from contexten.workflows.history import CLAIMED, WorkflowState, stream_name

from ._pgcluster import PrivateCluster, _free_port

pytest.importorskip("asyncpg")

INSTANCES = 5


def _build(url: str, calls: list[str]) -> App:
    app = App(url, store_open_wait=0)

    async def note(what: str) -> str:
        calls.append(what)
        return what

    @app.workflow("waiter")
    async def waiter(wf: Workflow, key: str) -> str:
        go = await wf.wait_for("test.go", correlation_id=key)
        return str(await wf.step(note, f"{key}:{go.data['n']}"))

    return app


async def _until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("moment", ["reading the index", "after two resumed"])
async def test_a_restart_during_startup_recovery_is_retried_and_waiting_instances_resume(
    cluster: PrivateCluster, moment: str
) -> None:
    cluster.start()
    calls: list[str] = []
    keys = [f"k{i}" for i in range(INSTANCES)]
    first = _build(cluster.url, calls)
    async with first:
        for key in keys:
            await first.start_workflow("waiter", key, workflow_id=f"w-{key}")

        async def all_waiting() -> bool:
            infos = [await first.get_workflow(f"w-{k}") for k in keys]
            return all(i.status == "waiting" for i in infos)

        await _until("the instances to wait", all_waiting)

    second = _build(cluster.url, calls)
    engine = second.workflows
    resumed = threading.Event()
    halted: list[bool] = []

    def back_up() -> None:
        cluster.resume()
        resumed.set()

    async def outage() -> None:
        # The server goes down (as a crash would) at this moment of the engine's start-up
        # recovery, and comes back a couple of seconds later.
        if not halted:
            halted.append(True)
            await asyncio.to_thread(cluster.halt)
            threading.Timer(2.0, back_up).start()

    if moment == "reading the index":
        read_index = engine.unfinished_index
        assert read_index is not None

        async def index_through_an_outage() -> list[str]:
            await outage()
            return await read_index()

        engine.unfinished_index = index_through_an_outage
    else:  # two instances are claimed and running when the third claim meets the outage
        claim = engine._claim
        claims: list[str] = []

        async def claim_through_an_outage(state: WorkflowState, *, force: bool = False) -> bool:
            claims.append(state.workflow_id)
            if len(claims) == 3:
                await outage()
            return await claim(state, force=force)

        engine._claim = claim_through_an_outage  # type: ignore[method-assign]

    async with second:
        assert second.running
        assert not second.workflows.ready, "the first attempt met the outage"
        report = await second.health()
        assert not report.ok
        assert not report.workflows_ready
        assert [loop.name for loop in report.workflow_loops] == [RECOVERY_LOOP]

        async def recovered() -> bool:
            return second.workflows.ready

        await _until("the recovery to succeed", recovered)
        assert resumed.is_set()
        status = second.supervisor.status(RECOVERY_LOOP)
        assert status.restarts >= 1
        assert status.last_error is not None

        async def healthy() -> bool:
            return (await second.health()).ok

        await _until("health to be ok", healthy)
        names = {loop.name for loop in (await second.health()).workflow_loops}
        assert names == {"workflows:tail", "workflows:heartbeat"}

        for n, key in enumerate(keys):
            await second.publish(
                Event(type="test.go", source="test", correlation_id=key, data={"n": n})
            )

        async def all_done() -> bool:
            infos = [await second.get_workflow(f"w-{k}") for k in keys]
            return all(i.status == "completed" for i in infos)

        await _until("the instances to complete", all_done)
        for key in keys:
            history = await second.store.read_stream(stream_name(f"w-{key}"))
            claimed = [r for r in history if r.event.type == CLAIMED]
            assert len(claimed) == 1, f"w-{key} claimed once by the new engine"
    assert sorted(calls) == sorted(f"{k}:{n}" for n, k in enumerate(keys)), "each ran once"


async def test_start_waits_for_a_store_that_comes_up_within_store_open_wait(
    cluster: PrivateCluster,
) -> None:
    # Nothing listens on the cluster's port yet: initdb and start it a moment after.
    starter = threading.Timer(1.0, cluster.start)
    starter.start()
    app = App(cluster.url, store_open_wait=120)
    began = time.monotonic()
    try:
        async with app:
            waited = time.monotonic() - began
            assert waited >= 1.0
            assert (await app.health()).store.reachable
    finally:
        starter.join()


async def test_start_gives_up_after_store_open_wait_with_a_clear_error() -> None:
    port = _free_port()  # nothing listens there
    app = App(f"postgresql://postgres:hunter2@127.0.0.1:{port}/x", store_open_wait=1.5)
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"stayed unreachable for 1\.5 s") as raised:
        await app.start()
    assert time.monotonic() - began >= 1.5
    assert "hunter2" not in str(raised.value)
    assert not app.running


def test_worker_exits_non_zero_when_the_store_stays_down(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "app.py").write_text("from contexten import App\n\napp = App()\n")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "contexten"),
            "worker",
            "--app",
            "app.py:app",
            "--store-wait",
            "1",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "CONTEXTEN_STORE_URL": f"postgresql://postgres:hunter2@127.0.0.1:{port}/x",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "stayed unreachable for 1 s" in done.stderr
    assert "event store unreachable; retrying" in done.stderr
    assert "hunter2" not in done.stderr
