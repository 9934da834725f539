"""Chaos: three ``contexten worker`` processes, 20,000 events over 500 keys, random ``kill -9``
and restarts of workers and one PostgreSQL restart; a history checker over the ledger tables
the handlers write proves nothing was lost, order held per key, duplicates came only from
kills, and every workflow finished with each step's effect once.

The store is a private PostgreSQL cluster started for this test (the shared server is never
restarted). The chaos is driven by a seeded RNG: the seed is printed and named in every
failure; ``CHAOS_SEED=<n>`` replays a schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from contexten import Event
from contexten.bus.partitions import partition_of
from contexten.exceptions import WorkflowNotFound
from contexten.store import Append, create_store
from contexten.store.base import EventStore
from contexten.workflows.admin import get_workflow_info

from ._history import Handled, History, Kill, StepRun, check
from ._pgcluster import PrivateCluster

asyncpg = pytest.importorskip("asyncpg")

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS = 20_000
KEYS = 500
BATCH = 100
WORKFLOW_EVERY = 50
STEPS = 3
WORKERS = 3
PARTITIONS = 16
HANDLERS = ("audit", "count")
APP = Path(__file__).with_name("_chaos_app.py")
ENV = {
    "CONTEXTEN_PARTITIONS": str(PARTITIONS),
    "CONTEXTEN_HEARTBEAT_SECONDS": "0.5",
    "CONTEXTEN_LEASE_SECONDS": "4",
    # Wait for the lease even for a dead process of this host, as across machines: it also
    # leaves the checker a moment to read the dead worker's checkpoints before anyone moves them.
    "CONTEXTEN_REAP_LOCAL_WORKERS": "0",
}
DEADLINE = 170.0  # seconds for the whole run, publishing to the last workflow


@pytest.fixture
def cluster(cluster: PrivateCluster) -> PrivateCluster:
    """The private PostgreSQL cluster, started (conftest stops and deletes it)."""
    cluster.start()
    return cluster


LEDGER_SCHEMA = """
CREATE TABLE chaos_handled (
    id bigserial PRIMARY KEY, handler text NOT NULL, n int NOT NULL, key text NOT NULL,
    pid int NOT NULL, attempt int NOT NULL, ts timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE chaos_step_runs (
    id bigserial PRIMARY KEY, wf text NOT NULL, step int NOT NULL, idem text NOT NULL,
    pid int NOT NULL, ts timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE chaos_effects (
    idem text PRIMARY KEY, wf text NOT NULL, step int NOT NULL, pid int NOT NULL);
"""


def _contexten() -> list[str]:
    script = Path(sys.executable).with_name("contexten")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from contexten.cli import main; main()"]


class Fleet:
    """The worker processes: started, killed and restarted by the chaos loop."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url = url
        self.logs = logs
        self.live: list[asyncio.subprocess.Process] = []
        self.all: list[asyncio.subprocess.Process] = []

    async def start(self) -> asyncio.subprocess.Process:
        log = open(self.logs / f"worker-{len(self.all)}.log", "wb")  # noqa: SIM115, ASYNC230
        try:
            proc = await asyncio.create_subprocess_exec(
                *_contexten(), "worker", "--app", f"{APP}:app", "--store", self.url,
                "--log-level", "info",
                cwd=REPO_ROOT,
                env={**os.environ, **ENV, "CHAOS_DSN": self.url},
                stdout=log,
                stderr=log,
            )  # fmt: skip
        finally:
            log.close()
        self.live.append(proc)
        self.all.append(proc)
        path = self.logs / f"worker-{len(self.all) - 1}.log"
        async with asyncio.timeout(60):  # until it has started (dispatcher and workflows)
            while b'"app started"' not in path.read_bytes():
                if proc.returncode is not None:
                    raise RuntimeError(f"worker {proc.pid} exited: {self.tail()}")
                await asyncio.sleep(0.1)
        return proc

    def tail(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("worker-*.log")):
            text = path.read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {path.name}\n{text[-1500:]}")
        return "\n".join(parts)[-6000:]

    async def stop(self) -> None:
        for proc in self.live:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.live:
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def kill_all(self) -> None:
        for proc in self.all:
            if proc.returncode is None:
                proc.kill()


async def _publish(
    store: EventStore, positions: dict[int, int], db: asyncio.Lock, pace: float
) -> None:
    """Store the events in commits of BATCH, each under a dedup key so a retry after an
    ambiguous failure (the server restarting) stores nothing twice."""
    for start in range(0, EVENTS, BATCH):
        ns = range(start, min(start + BATCH, EVENTS))
        appends = [
            Append(
                f"chaos-{n % KEYS}",
                [Event(type="chaos.work", source="chaos", subject=f"k{n % KEYS}", data={"n": n})],
            )
            for n in ns
        ]
        while True:
            try:
                async with db:
                    results = await store.commit(appends, dedup_key=f"chaos-batch-{start}")
                break
            except Exception:  # the private server restarting: the dedup key makes it safe
                await asyncio.sleep(0.2)
        for n, result in zip(ns, results, strict=True):
            positions[n] = result.first_position
        await asyncio.sleep(pace)


async def _progress(pool: asyncpg.Pool) -> tuple[int, int]:
    handled = await pool.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT handler, n FROM chaos_handled) d"
    )
    effects = await pool.fetchval("SELECT count(*) FROM chaos_effects")
    return int(handled), int(effects)


async def _chaos(
    rng: random.Random,
    fleet: Fleet,
    store: EventStore,
    cluster: PrivateCluster,
    db: asyncio.Lock,
    publishing: asyncio.Task[None],
    kills: list[Kill],
    actions: list[str],
    window: list[float],
) -> None:
    """Kill -9 a random worker every few seconds and start a new one a moment later; restart
    PostgreSQL once, while the events are still being published."""
    restart_after = rng.uniform(6.0, 12.0)
    t0 = time.monotonic()
    wall0 = time.time()
    restarted = False
    while not publishing.done() or not restarted:
        await asyncio.sleep(rng.uniform(1.5, 4.0))
        elapsed = time.monotonic() - t0
        if not restarted and elapsed >= restart_after:
            async with db:
                actions.append(f"{elapsed:.1f}s restart PostgreSQL")
                window.append(time.time())
                await asyncio.to_thread(cluster.restart)
                window.append(time.time())
                actions.append(f"{window[1] - wall0:.1f}s PostgreSQL back")
            restarted = True
            continue
        victim = rng.choice(fleet.live)
        victim.kill()
        await victim.wait()
        fleet.live.remove(victim)
        # The victim's leases run 4 s more and nobody else may move its checkpoints before
        # then: what they say now is what it had saved when it died.
        await asyncio.sleep(0.3)
        tag = f"/{victim.pid}/"
        saved = {
            (p.group, p.partition): p.position
            for p in await store.partitions()
            if p.owner is not None and tag in p.owner
        }
        kills.append(Kill(victim.pid, saved))
        saved_text = ",".join(f"{g[4:]}/{n}={pos}" for (g, n), pos in sorted(saved.items()))
        actions.append(f"{elapsed:.1f}s kill -9 {victim.pid} (saved: {saved_text})")
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        proc = await fleet.start()
        actions.append(f"{time.monotonic() - t0:.1f}s started {proc.pid}")


async def test_kill_9_workers_and_restart_postgres_lose_nothing(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed {seed} (CHAOS_SEED={seed} replays it)")
    rng = random.Random(seed)
    url = cluster.url
    pool = await asyncpg.create_pool(url, min_size=0, max_size=2)
    await pool.execute(LEDGER_SCHEMA)
    logs = Path(os.environ.get("CHAOS_LOG_DIR") or tmp_path)  # keep the workers' logs
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    fleet = Fleet(url, logs)
    kills: list[Kill] = []
    actions: list[str] = []
    window: list[float] = []
    positions: dict[int, int] = {}
    db = asyncio.Lock()
    try:
        async with create_store(url) as store:
            for _ in range(WORKERS):
                await fleet.start()
            started = time.monotonic()
            wall0 = time.time()
            publishing = asyncio.create_task(_publish(store, positions, db, pace=0.1))
            chaos = asyncio.create_task(
                _chaos(rng, fleet, store, cluster, db, publishing, kills, actions, window)
            )
            await publishing
            await chaos
            wanted = (EVENTS * len(HANDLERS), EVENTS // WORKFLOW_EVERY * STEPS)
            progress = (0, 0)
            while progress != wanted:
                if time.monotonic() - started > DEADLINE:
                    break
                await asyncio.sleep(0.5)
                try:
                    progress = await _progress(pool)
                except (OSError, asyncpg.PostgresError):  # a connection from before the restart
                    continue
            actions.append(f"{time.monotonic() - started:.1f}s progress {progress} of {wanted}")
            statuses = {}
            for i in range(0, EVENTS, WORKFLOW_EVERY):
                wf = f"chaos_flow:{i}"
                try:
                    info = await get_workflow_info(store, wf)
                except WorkflowNotFound:
                    statuses[wf] = "never started"
                    continue
                statuses[wf] = info.status.value
                if info.status.value != "completed" and len(actions) < 40:
                    history = info.to_dict(with_history=True)["history"]
                    actions.append(f"{wf} {info.status.value} {info.error}: {history}"[:3000])
            await fleet.stop()
            handled = [
                Handled(r["id"], r["handler"], r["n"], r["key"], r["pid"], r["attempt"],
                        r["ts"].timestamp())
                for r in await pool.fetch("SELECT * FROM chaos_handled")
            ]  # fmt: skip
            step_runs = [
                StepRun(r["id"], r["wf"], r["step"], r["idem"], r["pid"], r["ts"].timestamp())
                for r in await pool.fetch("SELECT * FROM chaos_step_runs")
            ]
            effects = [
                (r["wf"], r["step"], r["idem"])
                for r in await pool.fetch("SELECT wf, step, idem FROM chaos_effects")
            ]
        history = History(
            events=EVENTS,
            handlers=HANDLERS,
            position=positions,
            partition={
                (h, n): partition_of(f"k{n % KEYS}", PARTITIONS)
                for h in HANDLERS
                for n in range(EVENTS)
            },
            handled=handled,
            kills=kills,
            restart_window=(window[0], window[1]) if len(window) == 2 else None,
            workflows=statuses,
            steps=STEPS,
            step_runs=step_runs,
            effects=effects,
            t0=wall0,
        )
        problems = check(history)
        killed = {k.pid for k in kills}
        problems.extend(
            f"worker {p.pid} exited on its own (status {p.returncode})"
            for p in fleet.all
            if p.pid not in killed and p.returncode not in (0, None)
        )
        duplicates = len(handled) - len({(r.handler, r.n) for r in handled})
        print(
            f"seed {seed}: {len(kills)} kills, {duplicates} duplicate runs, "
            f"{len(step_runs) - len(effects)} repeated steps; " + "; ".join(actions)
        )
        (logs / "report.txt").write_text("\n".join([*problems, *actions]) + "\n")
        assert len(window) == 2, f"seed {seed}: PostgreSQL was never restarted"
        assert kills, f"seed {seed}: no worker was killed"
        assert not problems, (
            f"seed {seed} (CHAOS_SEED={seed} replays it): "
            + "\n".join(problems[:20])
            + "\nactions: "
            + "; ".join(actions)
            + "\n"
            + fleet.tail()
        )
    finally:
        fleet.kill_all()
        for proc in fleet.all:
            if proc.returncode is None:
                await proc.wait()
        await pool.close()
