"""The dashboard's one data-access module: pagination through the log is complete (no gap,
no repeat), filters combine, and the scans stay bounded."""

from __future__ import annotations

from typing import Any

from contexten import App, Event
from contexten.dashboard.data import SCAN_BUDGET, DashboardData, EventFilter
from contexten.projections.event_search import follow_events


class Host:
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def read(self) -> Any:
        return self.app.read

    async def health(self) -> Any:
        return await self.app.health()


async def walk(data: DashboardData, filters: EventFilter, limit: int) -> list[int]:
    positions: list[int] = []
    before = None
    while True:
        page = await data.events(filters, before=before, limit=limit)
        positions.extend(r.position for r in page.events)
        if page.before is None:
            return positions
        before = page.before


async def test_paging_newest_first_visits_every_match_once() -> None:
    app = App("memory://", dispatch=False)
    async with app:
        for n in range(130):
            kind = "test.even.seen" if n % 2 == 0 else "test.odd.seen"
            await app.publish(Event(type=kind, subject=f"s{n}", correlation_id=f"K-{n % 3}"))
        data = DashboardData(Host(app))
        everything = await walk(data, EventFilter(), 50)
        assert everything == list(range(130, 0, -1))
        evens = await walk(data, EventFilter(type="test.even.*"), 7)
        assert evens == [p for p in range(130, 0, -1) if (p - 1) % 2 == 0]
        both = await walk(data, EventFilter(type="test.*.seen", correlation_id="K-1"), 10)
        assert both == [p for p in range(130, 0, -1) if (p - 1) % 3 == 1]
        assert await walk(data, EventFilter(source="nowhere"), 10) == []
        # What the live stream sends after a position (the read side's follower).
        ticks = follow_events(
            app.store, EventFilter(type="test.odd.*").query(), 125, seconds=5, heartbeat=1
        )
        tick = await anext(ticks)
        await ticks.aclose()
        assert [r.position for r in tick.events] == [126, 128, 130]
        assert tick.position == 130


async def test_a_filter_that_matches_nothing_reads_at_most_the_scan_budget() -> None:
    app = App("memory://", dispatch=False)
    async with app:
        for n in range(SCAN_BUDGET + 300):
            await app.publish(Event(type="test.noise.made", subject=str(n)))
        data = DashboardData(Host(app))
        page = await data.events(EventFilter(type="test.signal.*"), limit=50)
        assert page.events == []
        assert page.before is not None  # it says where to go on
        assert page.before >= 300 - 200  # and it stopped near the budget, not at the start
        rest = await data.events(EventFilter(type="test.signal.*"), before=page.before)
        assert rest.before is None


async def test_work_item_gathers_its_events_and_workflows() -> None:
    app = App("memory://", dispatch=False)
    async with app:
        await app.publish(Event(type="test.issue.created", correlation_id="ENG-5"))
        await app.publish(Event(type="test.issue.created", correlation_id="ENG-6"))
        await app.projections.catch_up()  # no dispatch here: no runner keeps it current
        data = DashboardData(Host(app))
        item = await data.work_item("ENG-5")
        assert [r.event.correlation_id for r in item.entries] == ["ENG-5"]
        assert item.summary is not None
        assert item.summary["entries"] == 1
        assert item.next_after is None


class CountingHost(Host):
    """The app, counting how often its health report is built."""

    def __init__(self, app: App) -> None:
        super().__init__(app)
        self.health_reports = 0

    async def health(self) -> Any:
        self.health_reports += 1
        return await super().health()


async def test_platforms_take_the_agents_of_a_health_report_already_built() -> None:
    app = App("memory://", dispatch=False)
    async with app:
        await app.publish(Event(type="github.pull_request.opened", source="github"))
        await app.projections.catch_up()
        host = CountingHost(app)
        data = DashboardData(host)
        report = await data.health()
        assert host.health_reports == 1
        assert await data.platforms(report) == await data.platforms()
        assert host.health_reports == 2  # only the call without a report built another
        live = {"available": False, "breaker": "open"}
        rows = await data.platforms({**report, "agents": {"github": live, "slack": live}})
        assert host.health_reports == 2
        by_name = {r["platform"]: r for r in rows}
        assert by_name["github"]["live"] == live
        assert set(by_name["github"]) > {"platform", "live"}  # the read model's row, merged
        assert by_name["slack"] == {"platform": "slack", "live": live}
