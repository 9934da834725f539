"""B8 workers: one subscription shared by 1, 2 and 4 worker processes; failover after kill -9.

Side by side in one run, for SQLite (one file) and PostgreSQL (a throwaway schema):

* handler throughput with 1, 2 and 4 ``contexten`` worker processes: the workers start and
  share the partitions, then N events over K keys are stored (in commits of 100) and timed
  until all are handled; each handler waits ``--pause`` seconds (50 ms: waiting on I/O).
  Also counted: the workers' CPU time per event (all their threads, from ``/proc``, from the
  first commit until the handlers and the read models are done), duplicate deliveries (must
  be 0 while all workers live) and per-key order violations (must be 0);
* the limit on PostgreSQL: raw asyncpg single-row insert transactions from 100 tasks (what
  a handler's one write per event costs the server at best);
* failover: three workers under a steady load, one killed with SIGKILL; the time until
  every partition it held is held by a live worker again (median and max of ``--failovers``),
  with the default lease (10 s) and heartbeat (2 s) and the same-host shortcut off, as it
  would be across machines.

* the peer on PostgreSQL: DBOS queues, 1 and 4 processes (``bench/_b8_dbos.py``), the same
  number of workflows each waiting ``--pause`` in one step, ``worker_concurrency`` = the same
  in-flight limit per process, timed from the first enqueue to the last result. Needs the
  ``bench`` extra (``pip install -e '.[bench]'``); skipped with a message otherwise.

The issue calls this benchmark ``b6_workers``; it is B8 here (B6 was taken by the front door).

Run: ``.venv/bin/python bench/b8_workers.py [--events 4000] [--keys 400] [--pause 0.05]
[--concurrency 200] [--failovers 5] [--postgres postgresql://postgres@127.0.0.1:5432/test]
[--skip-sqlite] [--skip-dbos]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from contexten import App, Event
from contexten.store import Append, create_store

WORKER = Path(__file__).with_name("_b6_worker.py")
DBOS_WORKER = Path(__file__).with_name("_b8_dbos.py")
CONCURRENCY = 200  # handlers in flight per worker process (--concurrency)


async def _start(
    url: str, ledger: Path, pause: float, env: dict[str, str]
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        url,
        str(ledger),
        str(pause),
        str(CONCURRENCY),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line != b"ready\n":
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc


def _ledger(path: Path) -> list[tuple[int, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            n, ns, pid = line.split()
            out.append((int(n), int(ns), int(pid)))
    return out


async def _publish(url: str, first: int, count: int, keys: int) -> None:
    async with create_store(url) as store:
        for start in range(first, first + count, 100):
            appends = [
                Append(
                    f"b6-{n % keys}",
                    [
                        Event(
                            type="bench.work", source="bench", subject=f"k{n % keys}", data={"n": n}
                        )
                    ],
                )
                for n in range(start, min(start + 100, first + count))
            ]
            await store.commit(appends)


def _cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _read_models_at(url: str, head: int) -> None:
    """Wait until every read model has folded the log up to ``head``."""
    app = App(url, dispatch=False)
    async with app:
        while any(s.position < head for s in await app.projections.status()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def throughput(
    url: str, workers: int, events: int, keys: int, pause: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger"
        procs = [await _start(url, ledger, pause, {}) for _ in range(workers)]
        async with create_store(url) as store:  # until the workers share the partitions
            while True:
                parts = await store.partitions("sub:b6")
                owners = {p.owner for p in parts if p.held}
                if len(owners) == workers and all(p.held for p in parts):
                    break
                await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        cpu0 = sum(_cpu(p.pid) for p in procs)
        await _publish(url, 0, events, keys)
        # The ledger is written by other processes: polling the file is the only way.
        while len({n for n, _, _ in _ledger(ledger)}) < events:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        # Until the read models have folded everything too (they run in the workers).
        async with create_store(url) as store:
            head = await store.head()
        await _read_models_at(url, head)
        cpu = sum(_cpu(p.pid) for p in procs) - cpu0
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            await p.wait()
        entries = _ledger(ledger)
    counts = Counter(n for n, _, _ in entries)
    by_key: dict[int, list[int]] = defaultdict(list)
    for n, _, _ in sorted(entries, key=lambda e: e[1]):
        by_key[n % keys].append(n)
    violations = sum(1 for ns in by_key.values() if ns != sorted(ns))
    return {
        "rate": events / elapsed,
        "cpu_us": cpu / events * 1e6,
        "duplicates": sum(c - 1 for c in counts.values()),
        "violations": violations,
    }


async def failover(url: str, pause: float, keys: int) -> float:
    """Seconds from a SIGKILL until every partition the victim held is held by another."""
    env = {"CONTEXTEN_REAP_LOCAL_WORKERS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger"
        procs = [await _start(url, ledger, pause, env) for _ in range(3)]
        async with create_store(url) as store:
            victim = procs[2]
            tag = f"/{victim.pid}/"
            while True:  # until the victim holds its share
                parts = await store.partitions("sub:b6")
                if (
                    sum(1 for p in parts if p.held and p.owner and tag in p.owner)
                    >= len(parts) // 4
                ):
                    break
                await asyncio.sleep(0.1)
            load = asyncio.ensure_future(_steady(url, keys))
            victim.kill()
            killed = time.perf_counter()
            await victim.wait()
            while True:
                parts = await store.partitions("sub:b6")
                if all(p.held and p.owner and tag not in p.owner for p in parts):
                    break
                await asyncio.sleep(0.05)
            took = time.perf_counter() - killed
            load.cancel()
        for p in procs[:2]:
            p.send_signal(signal.SIGTERM)
            await p.wait()
    return took


async def _steady(url: str, keys: int) -> None:
    n = 10**9
    while True:
        await _publish(url, n, 50, keys)
        n += 50
        await asyncio.sleep(0.1)


async def raw_asyncpg(server: str, rows: int) -> float:
    import asyncpg

    pool = await asyncpg.create_pool(server, min_size=10, max_size=10)
    assert pool is not None
    schema = f"b6_raw_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute(f"CREATE TABLE {schema}.t (id bigint primary key, body bytea)")
    counter = iter(range(rows))
    t0 = time.perf_counter()

    async def task() -> None:
        for i in counter:
            await pool.execute(f"INSERT INTO {schema}.t VALUES ($1, $2)", i, b"x" * 200)

    await asyncio.gather(*(task() for _ in range(100)))
    rate = rows / (time.perf_counter() - t0)
    await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    await pool.close()
    return rate


async def dbos_rate(server: str, processes: int, events: int, pause: float) -> float:
    """Workflows/s through a DBOS queue served by ``processes`` processes (in a throwaway
    system schema)."""
    schema = f"b8_dbos_{uuid.uuid4().hex[:8]}"
    procs = []
    try:
        for index in range(processes):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(DBOS_WORKER),
                server,
                schema,
                str(index),
                str(events),
                str(pause),
                str(CONCURRENCY),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line != b"ready\n":
                raise RuntimeError(f"DBOS worker did not start: {line!r}")
        first = procs[0]
        assert first.stdin is not None
        assert first.stdout is not None
        first.stdin.write(b"go\n")
        await first.stdin.drain()
        seconds, done = (await first.stdout.readline()).split()
        assert int(done) == events
        return events / float(seconds)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        import asyncpg

        conn = await asyncpg.connect(server)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def _dbos_missing() -> str | None:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "dbos is not installed (pip install -e '.[bench]')"
    return None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--skip-dbos", action="store_true")
    args = parser.parse_args()
    global CONCURRENCY
    CONCURRENCY = args.concurrency
    backends: list[tuple[str, str, str | None]] = []
    tmp = tempfile.mkdtemp()
    if not args.skip_sqlite:
        backends.append(("SQLite", f"sqlite:///{tmp}/b6-{{run}}.db", None))
    if args.postgres:
        backends.append(("PostgreSQL", f"{args.postgres}?schema=b6_{{run}}", args.postgres))
    for name, template, server in backends:
        made: list[str] = []
        wait = args.pause * 1000
        print(
            f"## {name}: {args.events} events, {args.keys} keys, handlers wait {wait:g} ms, "
            f"{args.concurrency} in flight per worker"
        )
        base = None
        for workers in (1, 2, 4):
            run = uuid.uuid4().hex[:8]
            url = template.format(run=run)
            made.append(run)
            r = await throughput(url, workers, args.events, args.keys, args.pause)
            base = base or r["rate"]
            print(
                f"| {workers} worker(s) | {r['rate']:,.0f} events/s | {r['rate'] / base:.2f}x | "
                f"workers' CPU {r['cpu_us']:,.0f} us/event | "
                f"duplicates {r['duplicates']:.0f} | order violations {r['violations']:.0f} |"
            )
        if server is not None:
            limit = await raw_asyncpg(server, 5000)
            print(f"| raw asyncpg insert txns, 100 tasks (limit) | {limit:,.0f} rows/s |")
            missing = "skipped (--skip-dbos)" if args.skip_dbos else _dbos_missing()
            if missing is not None:
                print(f"| DBOS queues (peer) | {missing} |")
            else:
                dbos_base = None
                for processes in (1, 4):
                    rate = await dbos_rate(server, processes, args.events, args.pause)
                    dbos_base = dbos_base or rate
                    print(
                        f"| DBOS queues, {processes} process(es) (peer) | {rate:,.0f} "
                        f"workflows/s | {rate / dbos_base:.2f}x |"
                    )
        times = []
        for _ in range(args.failovers):
            run = uuid.uuid4().hex[:8]
            made.append(run)
            times.append(await failover(template.format(run=run), args.pause, args.keys))
        if times:
            print(
                f"| failover after kill -9 (lease 10 s, heartbeat 2 s) | median "
                f"{statistics.median(times):.1f} s | max {max(times):.1f} s | n={len(times)} |"
            )
        if server is not None:
            import asyncpg

            conn = await asyncpg.connect(server)
            for run in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "b6_{run}" CASCADE')
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
