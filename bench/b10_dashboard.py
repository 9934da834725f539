"""B10 dashboard: each page's server time, and how soon the live stream shows a new webhook.

Builds a SQLite store through its bulk path (``commit`` of ``--chunk`` appends per
transaction): ``--events`` events (half of them carry a work-item id, one in ten is a GitHub
pull-request event), ``--workflows`` workflow instances (98% completed, 1.5% running on
version 2, 0.5% blocked on a version 1 the code no longer has) and ``--letters`` dead
letters; then the read models catch up (timed), and it measures, in one process:

* page server time: each dashboard page requested ``--rounds`` times through the full ASGI
  stack (security middleware, session check, the page, its template), in process
  (httpx's ASGI transport: no sockets, so this is the server's own time); p50 and p99, after
  one first request per page timed apart (it compiles the page's templates);
* live latency: a real uvicorn server and signed GitHub webhooks posted to
  ``/webhooks/github`` every 0..2x ``--spacing`` seconds (so they land anywhere in a stream
  connection's life, reconnections included), watched by a server-sent-events client that
  reconnects as a browser's EventSource does (the time from the webhook's 202, and from its
  sending, to its row on the stream), and with ``--browser`` by the events page in Debian's
  Chromium driven by Playwright (202 to the row in the page's table); p50 and p99;
* side by side, the reads this benchmark moved and what they replaced: the overview's
  charts, the versions summary, the work item page's envelopes, the filtered events list and
  the one-event page's "what it caused" (the ``events`` index read model now, the bounded
  scan of the log before); and the one-event page's event by id apart.

Every read model (the ``events`` index included) is caught up before anything is timed, and
the script checks that none lags the log's head.

Run: ``.venv/bin/python bench/b10_dashboard.py --events 1000000 --workflows 100000 --browser``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import tempfile
import time
from pathlib import Path

import httpx

from contexten import App, Event
from contexten.bus.dead_letters import PARKED, park
from contexten.dashboard import dashboard_routes
from contexten.dashboard.data import SCAN_BUDGET, DashboardData, EventFilter
from contexten.ingress import IngressConfig
from contexten.ingress.server import IngressServer, create_server
from contexten.projections.read_side import in_flight_by_version
from contexten.security import Role, create_token
from contexten.store.base import Append, RecordedEvent
from contexten.workflows.history import history_event, stream_name

SECRET = "b10-webhook-secret"
CHROMIUM = os.environ.get("CONTEXTEN_CHROMIUM", "/usr/bin/chromium")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(app: App, events: int, workflows: int, letters: int, chunk: int) -> None:
    """Seed through the store's bulk path: ``commit`` of ``chunk`` appends per transaction.

    Workflows: 98% completed, 1.5% running (version 2, open), 0.5% blocked on a version the
    code no longer has (version 1), so the versions page has rows to count and list.
    """
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
        if len(batch) == chunk:
            await store.commit(batch)
            batch = []
    for w in range(workflows):
        wid = f"bench:ENG-{w}"
        open_ = w % 200 < 4  # 2%: 3 running, 1 blocked in every 200
        version = "2" if open_ and w % 200 < 3 else "1"
        started = history_event(
            "started",
            {"workflow_id": wid, "name": "bench", "version": version, "kind": "function",
             "input": {"key": f"ENG-{w}"}},
            wid,
        )  # fmt: skip
        if not open_:
            last = [history_event("completed", {"result": {"ok": True}}, wid)]
        elif version == "2":
            last = []  # started, running
        else:
            error = {"type": "contexten.exceptions.NondeterminismError",
                     "message": "version 1 is not registered"}  # fmt: skip
            last = [history_event(
                "blocked", {"reason": "version_not_registered", "error": error,
                            "version": "1"}, wid
            )]  # fmt: skip
        batch.append(Append(stream_name(wid), [started, *last]))
        if len(batch) == chunk // 2:
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
        "schedules /schedules": "/schedules",
        "versions /versions": "/versions",
        "versions, one version's blocked": "/versions?name=bench&version=1",
    }
    out = {}
    cold: dict[str, float] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(asgi),
        base_url="http://127.0.0.1",
        cookies={"contexten_session": token},
    ) as client:
        for label, path in pages.items():
            # The first request of a page compiles its templates (and, for the first page,
            # sets up the app's routes and caches): a one-off cost of a fresh process, timed
            # and printed apart so the p99 of ``rounds`` requests is the steady state.
            started = time.perf_counter()
            assert (await client.get(path)).status_code == 200, path
            cold[label] = time.perf_counter() - started
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                answer = await client.get(path)
                samples.append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code)
            out[label] = (percentile(samples, 0.5), percentile(samples, 0.99))
    print("first request of each page (not in its p50/p99):", ", ".join(
        f"{label} {seconds * 1000:,.1f} ms" for label, seconds in cold.items()))  # fmt: skip
    return out


async def chart_times(app: App, rounds: int) -> dict[str, tuple[float, float]]:
    """The overview's two per-minute charts alone, side by side: the ``activity`` read model
    (now) and the scan of the newest 5,000 events it replaced (bucketed the same way)."""

    async def scan() -> None:
        recent = await app.store.read_all_backwards(limit=5_000)
        events, errors = [0] * 60, [0] * 60
        newest = recent[0].recorded_at
        for rec in recent:
            age = int((newest - rec.recorded_at).total_seconds() // 60)
            if age >= 60:
                break
            events[59 - age] += 1
            errors[59 - age] += rec.event.type == PARKED

    async def read_model() -> None:
        await app.read.per_minute(minutes=60)

    out = {}
    for label, run in (("charts: activity read model", read_model),
                       ("charts: scan of the newest 5,000 events (before)", scan)):  # fmt: skip
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            await run()
            samples.append(time.perf_counter() - started)
        out[label] = (percentile(samples, 0.5), percentile(samples, 0.99))
    return out


async def scan_filtered(app: App, filters: EventFilter, limit: int = 50) -> list[RecordedEvent]:
    """The filtered events list as it was before the ``events`` index: the newest log
    entries read backwards in pages of 200 and tested one by one, up to the scan budget."""
    matches = filters.predicate()
    found: list[RecordedEvent] = []
    cursor: int | None = None
    scanned = 0
    while scanned < SCAN_BUDGET and len(found) < limit:
        page = await app.store.read_all_backwards(before=cursor, limit=200)
        if not page:
            break
        for rec in page:
            scanned += 1
            cursor = rec.position
            if matches(rec):
                found.append(rec)
    return found[:limit]


async def scan_caused(app: App, rec: RecordedEvent, limit: int = 50) -> list[RecordedEvent]:
    """ "What it caused" as it was before the ``events`` index: the scan-budget entries after
    the event read in pages of 500, every body decoded, then filtered on ``causation_id``."""
    found: list[RecordedEvent] = []
    after, scanned = rec.position, 0
    while scanned < SCAN_BUDGET and len(found) < limit:
        page = await app.store.read_all(after=after, limit=500)
        if not page:
            break
        scanned += len(page)
        after = page[-1].position
        found.extend(r for r in page if r.event.causation_id == rec.event.id)
    return found[:limit]


async def read_times(app: App, rounds: int) -> dict[str, tuple[float, float]]:
    """The overview's and the work item page's reads apart; and the reads this benchmark
    moved, side by side with what they replaced: the versions summary from the
    ``workflow_version_counts`` counters and from every open instance's row; the work item
    page's 200 envelopes in one ``get_events`` and one ``get_event`` each; the
    filtered events list and the one-event page's "what it caused" through the read side's
    events query (the ``events`` index, what the pages call) and by the bounded log scan they
    used before; and the one-event page's event by id."""
    read = app.read
    ids = [row["event_id"] for row in (await read.timeline("ENG-2", limit=200)).items]
    data = DashboardData(app)
    first = (await app.store.read_all(after=0, limit=1))[0]  # the event page's event
    filters = EventFilter(type="github.pull_request.*")

    report = await data.health()

    async def platforms_once() -> None:
        await data.platforms(report)

    async def event_by_id() -> None:
        await data.event(first.event.id)

    async def caused_indexed() -> None:
        await data.caused_by(first)

    async def caused_scanned() -> None:
        await scan_caused(app, first)

    async def filtered_indexed() -> None:
        await data.events(filters)

    async def filtered_scanned() -> None:
        await scan_filtered(app, filters)

    async def versions_from_rows() -> None:
        in_flight_by_version(await read.open_workflow_infos())

    async def envelopes_one_by_one() -> None:
        for event_id in ids:
            await app.store.get_event(event_id)

    async def envelopes_at_once() -> None:
        await app.store.get_events(ids)

    indexed = [r.position for r in (await data.events(filters)).events]
    scanned = [r.position for r in await scan_filtered(app, filters)]
    # the scan stops at its budget (then the page offered "older"): what it found is the
    # index's newest, the index's page is full
    assert indexed[: len(scanned)] == scanned, "the index and the scan disagree"

    async def timeline() -> None:
        await read.timeline("ENG-2", limit=200)

    runs = (
        ("overview: the health report", data.health),
        ("overview: workflow counts", data.workflow_counts),
        ("overview: platforms (with the page's health report)", platforms_once),
        ("work item: its timeline page (read model)", timeline),
        ("versions: counters", read.workflow_versions),
        ("versions: every open instance's row (before)", versions_from_rows),
        (f"work item: {len(ids)} envelopes in one get_events", envelopes_at_once),
        (f"work item: {len(ids)} envelopes one get_event each (before)", envelopes_one_by_one),
        ("events filtered: events index (read side's events query)", filtered_indexed),
        (f"events filtered: scan of up to {SCAN_BUDGET:,} (before)", filtered_scanned),
        ("event page: the event by id", event_by_id),
        ("event page: what it caused, events index (causation_id)", caused_indexed),
        (f"event page: what it caused, scan of the {SCAN_BUDGET:,} after it (before)",
         caused_scanned),
    )  # fmt: skip
    out = {}
    for label, run in runs:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            await run()
            samples.append(time.perf_counter() - started)
        out[label] = (percentile(samples, 0.5), percentile(samples, 0.99))
    return out


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}", "content-type": "application/json"}


class SseClient:
    """A real server-sent-events client of ``/events/stream``, as a browser's EventSource
    behaves: it reconnects when the server ends a connection (after the ``retry:`` the
    server asked for, with ``Last-Event-ID``) and notes when each row arrived."""

    def __init__(self, client: httpx.AsyncClient, url: str, after: int) -> None:
        self.client = client
        self.url = url
        self.last_id = str(after)
        self.retry = 1.0
        self.arrivals: asyncio.Queue[float] = asyncio.Queue()
        self.reconnects = 0

    async def run(self) -> None:
        while True:
            headers = {"last-event-id": self.last_id}
            async with self.client.stream("GET", self.url, headers=headers) as stream:
                row = False
                async for line in stream.aiter_lines():
                    if line.startswith("retry: "):
                        self.retry = int(line[7:]) / 1000
                    elif line.startswith("id: "):
                        self.last_id = line[4:]
                    elif line.startswith("data: ") and "event-row" in line:
                        row = True
                    elif line == "" and row:
                        self.arrivals.put_nowait(time.perf_counter())
                        row = False
            self.reconnects += 1
            await asyncio.sleep(self.retry)


def webhook(n: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"action": "opened", "number": n, "pull_request": {"number": n,
         "title": f"b10 {n}", "user": {"login": "ada"}},
         "repository": {"full_name": "acme/api"}, "sender": {"login": "ada"}}
    ).encode()  # fmt: skip
    headers = {**signed(body), "x-github-event": "pull_request",
               "x-github-delivery": f"b10-{time.monotonic_ns()}"}  # fmt: skip
    return body, headers


async def pause(spacing: float) -> None:
    """Wait 0..2x ``spacing`` (random, so webhooks land anywhere in a stream's life)."""
    await asyncio.sleep(random.uniform(0, 2 * spacing))


async def sse_latency(
    base: str, token: str, head: int, webhooks: int, spacing: float
) -> tuple[list[float], list[float], int]:
    """Per webhook: 202 → its row on the stream, and sent → its row; reconnections seen."""
    answered_to_row: list[float] = []
    sent_to_row: list[float] = []
    async with (
        httpx.AsyncClient(base_url=base, cookies={"contexten_session": token}, timeout=30) as v,
        httpx.AsyncClient(base_url=base, timeout=30) as platform,
    ):
        sse = SseClient(v, "/events/stream?type=github.**", head)
        reading = asyncio.create_task(sse.run())
        try:
            await asyncio.sleep(0.5)  # connected
            for n in range(webhooks):
                body, headers = webhook(n)
                sent = time.perf_counter()
                answer = await platform.post("/webhooks/github", content=body, headers=headers)
                answered = time.perf_counter()
                assert answer.status_code == 202, answer.text
                arrived = await asyncio.wait_for(sse.arrivals.get(), 30)
                answered_to_row.append(max(0.0, arrived - answered))
                sent_to_row.append(arrived - sent)
                await pause(spacing)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    return answered_to_row, sent_to_row, sse.reconnects


async def browser_latency(base: str, token: str, webhooks: int, spacing: float) -> list[float]:
    """Per webhook: 202 → its row in the live events page in Chromium (Debian's, headless)."""
    from playwright.async_api import async_playwright

    samples: list[float] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/?token={token}")
            await page.goto(f"{base}/events?type=github.**")
            rows = page.locator("#event-rows tr.event-row")
            async with httpx.AsyncClient(base_url=base, timeout=30) as platform:
                body, headers = webhook(-1)  # until this one shows, the stream is not open
                await platform.post("/webhooks/github", content=body, headers=headers)
                await page.locator("#event-rows tr.event-row.fresh").first.wait_for()
                for n in range(webhooks):
                    shown = await rows.count()
                    body, headers = webhook(n)
                    answer = await platform.post("/webhooks/github", content=body, headers=headers)
                    answered = time.perf_counter()
                    assert answer.status_code == 202, answer.text
                    await rows.nth(shown).wait_for(state="attached", timeout=30_000)
                    samples.append(time.perf_counter() - answered)
                    await pause(spacing)
        finally:
            await browser.close()
    return samples


async def live_latency(
    app: App, token: str, webhooks: int, spacing: float, browser: bool
) -> dict[str, tuple[float, float]]:
    config = IngressConfig(github_secrets=(SECRET.encode(),))
    server = IngressServer(
        app, port=0, config=config, extra_routes=dashboard_routes(app), close_store=False
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{server.port}"
    out: dict[str, tuple[float, float]] = {}

    def add(label: str, samples: list[float]) -> None:
        out[label] = (percentile(samples, 0.5), percentile(samples, 0.99))

    try:
        answered, sent, reconnects = await sse_latency(
            base, token, await app.store.head(), webhooks, spacing
        )
        label = f"SSE client ({reconnects} reconnections)"
        add(f"live, {label}: webhook 202 → row", answered)
        add(f"live, {label}: webhook sent → row", sent)
        if browser:
            shown = await browser_latency(base, token, webhooks, spacing)
            add("live, Chromium: webhook 202 → row in the page", shown)
    finally:
        server.request_stop()
        await serving
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--letters", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--webhooks", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=0.3, help="mean seconds between webhooks")
    parser.add_argument(
        "--browser", action="store_true", help="also measure in Chromium (Playwright)"
    )
    parser.add_argument("--chunk", type=int, default=5000, help="appends per bulk commit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = App(f"sqlite:///{Path(tmp) / 'b10.db'}", dispatch=False)
        await app.start()
        try:
            started = time.perf_counter()
            await fill(app, args.events, args.workflows, args.letters, args.chunk)
            print(
                f"filled {args.events:,} events, {args.workflows:,} workflows, "
                f"{args.letters:,} dead letters in {time.perf_counter() - started:.1f} s"
            )
            started = time.perf_counter()
            await app.projections.catch_up()  # no dispatch here: no runner folds as they land
            print(f"read models caught up in {time.perf_counter() - started:.1f} s")
            head = await app.store.head()
            for status in await app.projections.status():
                print(f"  {status.name}: position {status.position:,}, lag {status.lag:,}")
                assert status.lag == 0, f"{status.name} lags the head ({head:,})"
            token = (await create_token(app.store, name="bench", role=Role.VIEWER)).token
            pages = await page_times(app, token, args.rounds)
            pages.update(await chart_times(app, args.rounds))
            pages.update(await read_times(app, args.rounds))
            print("| page | p50 | p99 |\n|---|---|---|")
            for label, (p50, p99) in pages.items():
                print(f"| {label} | {p50 * 1000:,.1f} ms | {p99 * 1000:,.1f} ms |")
            live = await live_latency(app, token, args.webhooks, args.spacing, args.browser)
            for label, (p50, p99) in live.items():
                print(f"| {label} | {p50 * 1000:,.1f} ms | {p99 * 1000:,.1f} ms |")
        finally:
            await app.stop()


if __name__ == "__main__":
    asyncio.run(main())
