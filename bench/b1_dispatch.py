"""B1 dispatch: events published -> stored -> dispatched to one trivial async handler.

Side by side in one run:

* the limits: a raw ``asyncio.Queue`` producer/consumer (no storage), and raw SQLite inserts
  group-committed at ``synchronous=FULL`` (storage, no dispatch);
* the peers: the in-process emitters ``pyee`` and ``blinker`` (no durability);
* Contexten on ``memory://`` and on ``sqlite://`` (durable, ``synchronous=FULL``).

Throughput runs publish N events from 100 concurrent publishers (each awaits its publish, as a
webhook request would) and time until the handler has seen them all. Every row carries the same
payload, a Contexten ``Event`` built by the publisher (and, for raw SQLite, encoded to JSON), so
the rows differ only in how the event travels. Latency runs offer a steady 1,000 events/s and
measure publish -> handler start.

Run: ``.venv/bin/python bench/b1_dispatch.py [--events 100000] [--rate 1000 --seconds 5]``

Every row runs on the event loop and with the collector settings a Contexten process uses
(``contexten.event_loop``: uvloop when installed, ``serving_gc``);
``CONTEXTEN_EVENT_LOOP=asyncio`` in front runs them all on the standard loop instead (the
loop an App embedded in a script's own ``asyncio.run`` gets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from _group_commit import GroupCommitWriter

from contexten import App, Event, event_loop
from contexten.events import encode_event
from contexten.observability.logging import configure_logging

PUBLISHERS = 100


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float = float("nan")
    """Process CPU time (all threads) of the run: steadier than events/s on a loaded machine."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


def loop_name() -> str:
    """The running event loop's library (``uvloop`` or ``asyncio``)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


async def fan_out(n: int, publish: Callable[[int], Awaitable[None]]) -> None:
    """Publish ``n`` items from PUBLISHERS concurrent publishers."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await publish(i)

    await asyncio.gather(*(worker() for _ in range(PUBLISHERS)))


# --- limits ----------------------------------------------------------------------------------


async def raw_queue(n: int) -> Result:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    latencies: list[float] = []
    done = asyncio.Event()

    async def consumer() -> None:
        seen = 0
        while seen < n:
            event = await queue.get()
            latencies.append(time.perf_counter() - event.data["t"])
            seen += 1
        done.set()

    task = asyncio.create_task(consumer())
    start = time.perf_counter()

    async def publish(i: int) -> None:
        await queue.put(tick(i))

    await fan_out(n, publish)
    await done.wait()
    elapsed = time.perf_counter() - start
    await task
    return Result("raw asyncio.Queue (limit)", n, elapsed, latencies)


async def raw_sqlite(n: int, tmp: Path) -> Result:
    writer = GroupCommitWriter(tmp / "raw.db", "events")
    start, cpu = time.perf_counter(), time.process_time()

    async def publish(i: int) -> None:
        await writer.insert(encode_event(tick(i)))

    await fan_out(n, publish)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    writer.close()
    return Result("raw SQLite group commit, FULL (limit)", n, elapsed, [], cpu)


# --- peers -------------------------------------------------------------------------------------


async def pyee_emitter(n: int) -> Result | None:
    try:
        from pyee.asyncio import AsyncIOEventEmitter
    except ImportError:
        return None
    emitter = AsyncIOEventEmitter()
    latencies: list[float] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        latencies.append(time.perf_counter() - event.data["t"])
        if len(latencies) == n:
            done.set()

    emitter.on("tick", handler)
    start = time.perf_counter()

    async def publish(i: int) -> None:
        emitter.emit("tick", tick(i))

    await fan_out(n, publish)
    await done.wait()
    return Result("pyee AsyncIOEventEmitter (peer)", n, time.perf_counter() - start, latencies)


async def blinker_signal(n: int) -> Result | None:
    try:
        from blinker import Signal
    except ImportError:
        return None
    signal = Signal()
    latencies: list[float] = []

    async def handler(sender: object, event: Event) -> None:
        latencies.append(time.perf_counter() - event.data["t"])

    signal.connect(handler)
    start = time.perf_counter()

    async def publish(i: int) -> None:
        await signal.send_async(None, event=tick(i))

    await fan_out(n, publish)
    return Result("blinker send_async (peer)", n, time.perf_counter() - start, latencies)


# --- contexten ---------------------------------------------------------------------------------


async def contexten(n: int, url: str, name: str) -> Result:
    app = App(store=url)
    latencies: list[float] = []
    done = asyncio.Event()

    @app.on("bench.tick", name="bench")
    async def handler(event: Event, ctx: object) -> None:
        latencies.append(time.perf_counter() - event.data["t"])
        if len(latencies) == n:
            done.set()

    async with app:
        start, cpu = time.perf_counter(), time.process_time()

        async def publish(i: int) -> None:
            await app.publish(tick(i))

        await fan_out(n, publish)
        await done.wait()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return Result(name, n, elapsed, latencies, cpu)


async def contexten_latency(url: str, rate: float, seconds: float, name: str) -> Result:
    """Offer ``rate`` events/s for ``seconds`` and measure publish -> handler start."""
    app = App(store=url)
    latencies: list[float] = []
    total = int(rate * seconds)
    done = asyncio.Event()

    @app.on("bench.tick", name="bench-latency")
    async def handler(event: Event, ctx: object) -> None:
        latencies.append(time.perf_counter() - event.data["t"])
        if len(latencies) == total:
            done.set()

    async with app:
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(
                    app.publish(
                        Event(
                            type="bench.tick", data={"t": time.perf_counter()}, subject=f"k{i % 64}"
                        )
                    )
                )
            )
        await asyncio.gather(*tasks)
        await asyncio.wait_for(done.wait(), timeout=seconds + 30)
        elapsed = time.perf_counter() - start
    return Result(name, total, elapsed, latencies)


def tick(i: int) -> Event:
    """The benchmark's event: what every row publishes."""
    return Event(type="bench.tick", data={"t": time.perf_counter()}, subject=f"k{i % 64}")


def print_table(title: str, rows: list[Result]) -> None:
    print(f"\n{title}")
    print(f"{'':44} {'events':>8} {'events/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/ev':>10}")
    for r in rows:
        print(
            f"{r.name:44} {r.events:>8} {r.rate:>11,.0f} {r.pct(0.5):>8.2f} {r.pct(0.99):>8.2f}"
            f" {r.cpu_seconds / r.events * 1e6:>10.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    n = args.events
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = [await raw_queue(n)]
        for peer in (pyee_emitter, blinker_signal):
            r = await peer(n)
            if r is not None:
                rows.append(r)
        rows.append(await contexten(n, "memory://", "contexten memory://"))
        raw = await raw_sqlite(n, tmp)
        rows.append(raw)
        durable = await contexten(n, f"sqlite:///{tmp / 'b1.db'}", "contexten sqlite:// (FULL)")
        rows.append(durable)
        print_table(
            f"B1 throughput: {n:,} events, {PUBLISHERS} concurrent publishers, "
            f"{os.cpu_count()} cores, {loop_name()} event loop",
            rows,
        )
        mem = next(r for r in rows if r.name == "contexten memory://")
        print(f"\nmemory path vs raw queue: {rows[0].rate / mem.rate:.1f}x slower (target <= 5x)")
        print(
            f"sqlite durable vs raw group commit: {100 * durable.rate / raw.rate:.0f}% "
            f"(target >= 40%), {durable.rate:,.0f} events/s (target >= 10,000)"
        )
        lat = [
            await contexten_latency("memory://", args.rate, args.seconds, "contexten memory://"),
            await contexten_latency(
                f"sqlite:///{tmp / 'b1-lat.db'}",
                args.rate,
                args.seconds,
                "contexten sqlite:// (FULL)",
            ),
        ]
        print_table(
            f"B1 latency: {args.rate:,.0f} events/s offered for {args.seconds:g} s "
            "(publish -> handler start; target p99 < 10 ms)",
            lat,
        )


if __name__ == "__main__":
    configure_logging(level="WARNING")
    with event_loop.serving_gc():
        event_loop.run(main())
