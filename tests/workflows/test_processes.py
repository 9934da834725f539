"""Crash tests: worker processes on one SQLite file, killed with SIGKILL, restarted.

The ledger (see ``_worker.py``) holds one row per idempotency key and counts how often each
key was asked for: a step re-run after a crash shows up as ``runs > 1`` on the same row,
never as a second row, and no completed workflow may miss a row.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from contexten.store.sqlite import SqliteEventStore
from contexten.workflows import WorkflowStatus, list_workflows
from contexten.workflows.admin import get_workflow_info

WORKER = Path(__file__).with_name("_worker.py")
HANG_GUARD = 120.0


class Worker:
    def __init__(self, tmp_path: Path) -> None:
        # A generous lock wait: several processes share the file on a busy 2-core machine.
        self.url = f"sqlite:///{tmp_path / 'events.db'}?busy_timeout=60"
        self.ledger = str(tmp_path / "ledger.db")
        # Create the ledger (and switch it to WAL) once, before workers race to do it.
        db = sqlite3.connect(self.ledger, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, runs INTEGER NOT NULL)"
            )
        finally:
            db.close()

    async def spawn(self, mode: str, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            self.url,
            self.ledger,
            mode,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return proc

    async def run(self, mode: str, *args: str) -> tuple[int, list[str]]:
        """Run a worker to its end; its exit code and output lines."""
        proc = await self.spawn(mode, *args)
        out, err = await proc.communicate()
        code = proc.returncode
        assert code is not None
        assert code in (0, -signal.SIGKILL), err.decode()
        return code, out.decode().split()

    def effects(self) -> dict[str, int]:
        with sqlite3.connect(self.ledger) as db:
            return dict(db.execute("SELECT key, runs FROM effects").fetchall())


async def _ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line != b"ready\n":
        assert proc.stderr is not None
        raise AssertionError(line + await proc.stderr.read())


@pytest.mark.slow
async def test_a_thousand_workflows_survive_twenty_kills(tmp_path: Path) -> None:
    worker = Worker(tmp_path)
    rng = random.Random(20240601)
    count = 1000
    kills = 0
    async with asyncio.timeout(HANG_GUARD):
        finished_early = False
        while kills < 20:
            proc = await worker.spawn("five", "--count", str(count))
            await _ready(proc)
            await asyncio.sleep(rng.uniform(0.005, 0.08))
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:  # it exited before the kill (not yet reaped)
                    pass
            await proc.communicate()
            if proc.returncode == 0:  # every workflow completed before this kill landed
                finished_early = True
                break
        code, lines = await worker.run("five", "--count", str(count))
    # A fast machine can finish all the work between kills; most runs get all 20 kills.
    assert kills >= (5 if finished_early else 20)
    assert code == 0
    assert lines[-1] == "done"

    effects = worker.effects()
    expected = {f"wf-{w}:{s}:s{s}" for w in range(count) for s in range(1, 6)}
    assert set(effects) == expected  # exactly one row per key: none lost, none extra
    async with SqliteEventStore(worker.url) as store:
        infos = await list_workflows(store)
        assert len(infos) == count
        assert {i.status for i in infos} == {WorkflowStatus.COMPLETED}
        for info in infos[:: count // 10]:
            full = await get_workflow_info(store, info.workflow_id)
            completed = [h for h in full.history if h.kind == "step_completed"]
            assert [h.data["seq"] for h in completed] == [1, 2, 3, 4, 5]


async def test_a_crash_after_the_effect_reruns_the_step_with_the_same_key(
    tmp_path: Path,
) -> None:
    worker = Worker(tmp_path)
    async with asyncio.timeout(HANG_GUARD):
        code, _ = await worker.run("die-after-effect")
        assert code == -signal.SIGKILL
        code, lines = await worker.run("die-after-effect")
    assert code == 0
    assert lines[-1] == "done"
    key = "die-after-effect:2:second"
    assert worker.effects() == {"die-after-effect:1:first": 1, key: 2}
    async with SqliteEventStore(worker.url) as store:
        info = await get_workflow_info(store, "die-after-effect")
    assert info.status is WorkflowStatus.COMPLETED
    assert info.result == ["die-after-effect:1:first", key]


async def test_a_kill_during_compensation_resumes_and_finishes_it(tmp_path: Path) -> None:
    worker = Worker(tmp_path)
    async with asyncio.timeout(HANG_GUARD):
        code, _ = await worker.run("saga")
        assert code == -signal.SIGKILL  # killed inside the compensation of step 2
        code, lines = await worker.run("saga")
    assert code == 0
    assert lines[-2:] == ["compensated", "done"]
    assert worker.effects() == {
        "saga:1:s1": 1,
        "saga:2:s2": 1,
        "saga:3:s3": 1,
        "saga:3:s3:compensate": 1,
        "saga:2:s2:compensate": 2,  # re-run after the kill, same key
        "saga:1:s1:compensate": 1,
    }
    async with SqliteEventStore(worker.url) as store:
        info = await get_workflow_info(store, "saga")
    assert info.status is WorkflowStatus.COMPENSATED
    done = [h.data["name"] for h in info.history if h.kind == "compensation_step_completed"]
    assert done == ["s3", "s2", "s1"]


async def test_fifty_concurrent_starts_in_each_of_two_processes_run_once(tmp_path: Path) -> None:
    worker = Worker(tmp_path)
    async with SqliteEventStore(worker.url):
        pass  # create the file first, so both workers open the same schema
    async with asyncio.timeout(HANG_GUARD):
        results = await asyncio.gather(worker.run("starts"), worker.run("starts"))
    assert [code for code, _ in results] == [0, 0]
    assert worker.effects() == {"the-one:1:only": 1}
    async with SqliteEventStore(worker.url) as store:
        events = await store.read_stream("$wf-the-one")
    assert sum(1 for r in events if r.event.type == "contexten.workflow.started") == 1
