"""B11 NATS relay: events/s the JetStream outbox relay publishes, against raw nats-py.

Side by side in one run, against the NATS server at ``--url`` (each row on a stream of its
own, deleted afterwards), the same N events (``--keys`` ordering keys, a ~1 KB payload):

* raw nats-py, ``js.publish`` awaited, from ``--concurrency`` tasks (the limit for what the
  relay does: one message in flight per ordering key, each awaiting its ack);
* raw nats-py ``js.publish_async`` with every ack awaited at the end (the client's ceiling,
  no per-key order);
* the Contexten relay (``app.relay_to_nats``), events already in the store, from the start
  of the relay until JetStream acknowledged the last one: on ``memory://`` and on SQLite
  (WAL, ``synchronous=FULL``). The App's built-in read models fold the same log meanwhile,
  as they would in production.

Run: ``.venv/bin/python bench/b11_nats_relay.py [--events 20000] [--keys 500]
[--concurrency 100] [--url nats://127.0.0.1:4222]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import nats
import structlog

from contexten import App, Event
from contexten.relay.nats import MSG_ID_HEADER
from contexten.relay.wire import encode_message, subject_for
from contexten.store import create_store


def _events(count: int, keys: int) -> list[Event]:
    filler = "x" * 900
    return [
        Event(
            type="github.pull_request.opened",
            source="github",
            subject=f"acme/app#{n % keys}",
            data={"n": n, "title": filler},
        )
        for n in range(count)
    ]


async def _fresh_stream(url: str) -> str:
    name = f"BENCH_{uuid.uuid4().hex[:10]}"
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name=name, subjects=["contexten.>"], duplicate_window=120)
    finally:
        await nc.close()
    return name


async def _drop_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def raw_awaited(url: str, events: list[Event], concurrency: int) -> float:
    """Raw js.publish, each awaited, from ``concurrency`` tasks: events/s."""
    stream = await _fresh_stream(url)
    messages = [
        (subject_for(e.type), *encode_message(e, i + 1), e.id) for i, e in enumerate(events)
    ]
    nc = await nats.connect(url)
    js = nc.jetstream()
    queue = iter(messages)

    async def worker() -> None:
        for subject, body, headers, msg_id in queue:
            await js.publish(
                subject, body, stream=stream, headers={**headers, MSG_ID_HEADER: msg_id}
            )

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(events) / (time.perf_counter() - started)
    finally:
        await nc.close()
        await _drop_stream(url, stream)


async def raw_async(url: str, events: list[Event]) -> float:
    """Raw js.publish_async, every ack awaited at the end: events/s."""
    stream = await _fresh_stream(url)
    messages = [
        (subject_for(e.type), *encode_message(e, i + 1), e.id) for i, e in enumerate(events)
    ]
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    try:
        started = time.perf_counter()
        futures = [
            await js.publish_async(
                subject, body, stream=stream, headers={**headers, MSG_ID_HEADER: msg_id}
            )
            for subject, body, headers, msg_id in messages
        ]
        await asyncio.gather(*futures)
        return len(events) / (time.perf_counter() - started)
    finally:
        await nc.close()
        await _drop_stream(url, stream)


async def relay(url: str, store_url: str, events: list[Event], concurrency: int) -> float:
    """The Contexten relay over a store already holding ``events``: events/s."""
    async with create_store(store_url) as store:
        for i in range(0, len(events), 500):
            for e in events[i : i + 500]:
                await store.append(f"github-{e.subject}", [e])
        app = App(store)
        stream = f"BENCH_{uuid.uuid4().hex[:10]}"
        r = app.relay_to_nats(url, stream=stream, concurrency=concurrency)
        try:
            started = time.perf_counter()
            async with app:
                while True:
                    if r.published + r.duplicates >= len(events):
                        break
                    await asyncio.sleep(0.005)
                elapsed = time.perf_counter() - started
        finally:
            await _drop_stream(url, stream)
    return len(events) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    events = _events(args.events, args.keys)
    body, _ = encode_message(events[0], 1)
    print(f"{args.events:,} events, {args.keys} keys, {len(body):,}-byte messages")
    rows = [
        (
            f"raw nats-py js.publish awaited, {args.concurrency} tasks (limit)",
            await raw_awaited(args.url, events, args.concurrency),
        ),
        ("raw nats-py js.publish_async (client ceiling)", await raw_async(args.url, events)),
        (
            "Contexten relay from memory://",
            await relay(args.url, "memory://", events, args.concurrency),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        rows.append(
            (
                "Contexten relay from sqlite:// (FULL)",
                await relay(args.url, f"sqlite:///{db}", events, args.concurrency),
            )
        )
    limit = rows[0][1]
    print("| row | events/s | % of limit |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {100 * rate / limit:.0f}% |")


if __name__ == "__main__":
    asyncio.run(main())
