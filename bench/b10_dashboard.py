"""B10 dashboard: each page's server time, and how soon the live stream shows a new webhook.

Builds a SQLite store with ``--events`` events (half of them carry a work-item id, one in
ten is a GitHub pull-request event), ``--workflows`` finished workflow instances and
``--letters`` dead letters, then measures, in one process:

* page server time: each dashboard page requested ``--rounds`` times through the full ASGI
  stack (security middleware, session check, the page, its template), in process
  (httpx's ASGI transport: no sockets, so this is the server's own time); p50 and p99;
* live latency: a real uvicorn server, a client on ``/events/stream``, and signed GitHub
  webhooks posted to ``/webhooks/github``: the time from the webhook's 202 to the row
  arriving on the stream, p50 and p99 over ``--webhooks`` webhooks.

Run: ``.venv/bin/python bench/b10_dashboard.py [--events 200000] [--workflows 10000]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import tempfile
import time
from pathlib import Path

import httpx

from contexten import App, Event
from contexten.bus.dead_letters import park
from contexten.dashboard import dashboard_routes
from contexten.ingress import IngressConfig
from contexten.ingress.server import IngressServer, create_server
from contexten.security import Role, create_token
from contexten.store.base import Append
from contexten.workflows.history import history_event, stream_name

SECRET = "b8-webhook-secret"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(app: App, events: int, workflows: int, letters: int) -> None:
    store = app.store
    batch: list[Append] = []
    for n in range(events):
        kind = "github.pull_request.opened" if n % 10 == 0 else "linear.issue.updated"
        batch.append(
            Append(
                f"bench-{n % 1000}",
                [
                    Event(
                        type=kind,
                        source=kind.split(".")[0],
                        subject=f"s-{n}",
                        correlation_id=f"ENG-{n % 5000}" if n % 2 == 0 else None,
                        data={"n": n, "title": f"item {n}", "url": f"https://x.example/{n}"},
                    )
                ],
            )
        )
        if len(batch) == 1000:
            await store.commit(batch)
            batch = []
    for w in range(workflows):
        wid = f"bench:ENG-{w}"
        started = history_event(
            "started",
            {"workflow_id": wid, "name": "bench", "version": "1", "kind": "function",
             "input": {"key": f"ENG-{w}"}},
            wid,
        )  # fmt: skip
        done = history_event("completed", {"result": {"ok": True}}, wid)
        batch.append(Append(stream_name(wid), [started, done]))
        if len(batch) == 500:
            await store.commit(batch)
            batch = []
    if batch:
        await store.commit(batch)
    now = app.clock.now()
    for n in range(letters):
        await park(
            store,
            subscription="bench-handler",
            event=Event(type="linear.issue.updated", subject=f"l-{n}"),
            position=n + 1,
            error=RuntimeError("bench"),
            attempts=3,
            first_failure_at=now,
            last_failure_at=now,
            now=now,
        )


async def page_times(app: App, token: str, rounds: int) -> dict[str, tuple[float, float]]:
    asgi = create_server(app, IngressConfig(), extra_routes=dashboard_routes(app))
    letter = (await app.dead_letters.list(limit=1))[0].id
    event = (await app.store.read_all(after=0, limit=1))[0].event.id  # a bench event
    pages = {
        "overview /": "/",
        "events /events": "/events",
        "events filtered": "/events?type=github.pull_request.*",
        "event page": f"/events/{event}",
        "workflows /workflows": "/workflows",
        "workflows ?status=failed": "/workflows?status=failed",
        "workflow page": "/workflows/bench:ENG-1",
        "work item ENG-2": "/work-items/ENG-2",
        "dead letters": "/dead-letters",
        "dead letter page": f"/dead-letters/{letter}",
    }
    out = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(asgi),
        base_url="http://127.0.0.1",
        cookies={"contexten_session": token},
    ) as client:
        for label, path in pages.items():
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                answer = await client.get(path)
                samples.append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code)
            out[label] = (percentile(samples, 0.5), percentile(samples, 0.99))
    return out


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}", "content-type": "application/json"}


async def live_latency(app: App, token: str, webhooks: int) -> tuple[float, float]:
    config = IngressConfig(github_secrets=(SECRET.encode(),))
    server = IngressServer(
        app, port=0, config=config, extra_routes=dashboard_routes(app), close_store=False
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{server.port}"
    samples: list[float] = []
    try:
        async with (
            httpx.AsyncClient(
                base_url=base, cookies={"contexten_session": token}, timeout=30
            ) as viewer,
            httpx.AsyncClient(base_url=base, timeout=30) as platform,
        ):
            head = await app.store.head()
            url = f"/events/stream?after={head}&type=github.**"
            async with viewer.stream("GET", url) as stream:
                lines = stream.aiter_lines()
                for n in range(webhooks):
                    body = json.dumps(
                        {"action": "opened", "number": n, "pull_request": {"number": n,
                         "title": f"b8 {n}", "user": {"login": "ada"}},
                         "repository": {"full_name": "acme/api"}, "sender": {"login": "ada"}}
                    ).encode()  # fmt: skip
                    headers = {**signed(body), "x-github-event": "pull_request",
                               "x-github-delivery": f"b8-{time.monotonic_ns()}"}  # fmt: skip
                    answer = await platform.post("/webhooks/github", content=body, headers=headers)
                    answered = time.perf_counter()
                    assert answer.status_code == 202, answer.text
                    async for line in lines:
                        if line.startswith("data: ") and "event-row" in line:
                            samples.append(time.perf_counter() - answered)
                            break
    finally:
        server.request_stop()
        await serving
    return percentile(samples, 0.5), percentile(samples, 0.99)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--letters", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--webhooks", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = App(f"sqlite:///{Path(tmp) / 'b8.db'}", dispatch=False)
        await app.start()
        try:
            started = time.perf_counter()
            await fill(app, args.events, args.workflows, args.letters)
            print(
                f"filled {args.events:,} events, {args.workflows:,} workflows, "
                f"{args.letters:,} dead letters in {time.perf_counter() - started:.1f} s"
            )
            started = time.perf_counter()
            await app.projections.catch_up()  # no dispatch here: no runner folds as they land
            print(f"read models caught up in {time.perf_counter() - started:.1f} s")
            token = (await create_token(app.store, name="bench", role=Role.VIEWER)).token
            print("| page | p50 | p99 |\n|---|---|---|")
            for label, (p50, p99) in (await page_times(app, token, args.rounds)).items():
                print(f"| {label} | {p50 * 1000:,.1f} ms | {p99 * 1000:,.1f} ms |")
            p50, p99 = await live_latency(app, token, args.webhooks)
            print(f"| live: webhook 202 → row on the stream | {p50 * 1000:.1f} ms | "
                  f"{p99 * 1000:.1f} ms |")  # fmt: skip
        finally:
            await app.stop()


if __name__ == "__main__":
    asyncio.run(main())
