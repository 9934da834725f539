"""The built-in read models through an App: workflows, dead letters, work items, platforms.

Each read model is checked against the source of truth: the same questions answered by
folding the streams (the way listings worked before read models).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contexten import App, Event, Workflow
from contexten.bus.dead_letters import DeadLetterQueue
from contexten.clock import WallClock
from contexten.projections import Projection, ProjectionBatch, Query, Table
from contexten.resilience.retry import RetryPolicy
from contexten.store.base import RecordedEvent
from contexten.workflows.admin import list_workflows as fold_workflows

HANG_GUARD = 30


def _app(kind: str, tmp_path: Path) -> App:
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'events.db'}"
    return App(url, clock=WallClock(), checkpoint_interval=0.01)


async def _until(check: Any) -> None:
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(1_000_000):
            if await check():
                return
            await asyncio.sleep(0.01)


async def _caught_up(app: App) -> bool:
    return all(s.lag == 0 for s in await app.projections.status())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_workflows_read_model_matches_the_fold(kind: str, tmp_path: Path) -> None:
    app = _app(kind, tmp_path)

    async def charge(n: int) -> int:
        if n == 3:
            raise ValueError("card declined")
        return n * 10

    @app.workflow("order", on="shop.order.placed", key=lambda e: e.subject)
    async def order(wf: Workflow, event: Event) -> int:
        total: int = await wf.step(charge, event.data["n"], retry=RetryPolicy(maximum_attempts=1))
        if event.data["n"] == 2:
            await wf.sleep(timedelta(hours=1))
        return total

    async with app:
        for n in (1, 2, 3):
            await app.publish(
                Event(type="shop.order.placed", source="shop", subject=f"o{n}", data={"n": n})
            )

        async def settled() -> bool:
            rows = (await app.read.workflows()).items
            return {r["status"] for r in rows} == {"completed", "sleeping", "failed"}

        await _until(settled)
        folded = {
            i.workflow_id: (str(i.status), i.current_step, i.name)
            for i in await fold_workflows(app.store)
        }
        rows = (await app.read.workflows()).items
        assert {r["workflow_id"]: (r["status"], r["current_step"], r["name"]) for r in rows} == (
            folded
        )
        by_id = {r["workflow_id"]: r for r in rows}
        assert by_id["order:o1"]["key"] == "o1"
        assert by_id["order:o1"]["ended_at"] is not None
        assert by_id["order:o2"]["ended_at"] is None
        assert "card declined" in by_id["order:o3"]["error"]["message"]
        failed = await app.read.workflows(status="failed")
        assert [r["workflow_id"] for r in failed.items] == ["order:o3"]
        assert sorted(await app.read.unfinished_workflow_ids()) == ["order:o2"]
        # Pages: newest update first, a cursor continues where the page ended.
        first = await app.read.workflows(limit=2)
        assert len(first.items) == 2
        assert first.next_cursor is not None
        rest = await app.read.workflows(limit=2, cursor=first.next_cursor)
        assert len(rest.items) == 1
        assert {r["workflow_id"] for r in first.items + rest.items} == set(folded)
        assert [i.workflow_id for i in await app.list_workflows("sleeping")] == ["order:o2"]
        # The same pages as WorkflowInfo (what the dashboard shows), and exact counts.
        infos = await app.read.workflow_info_page(limit=2)
        assert [i.workflow_id for i in infos.items] == [r["workflow_id"] for r in first.items]
        assert infos.next_cursor == first.next_cursor
        counts = await app.read.workflow_counts()
        assert (counts["completed"], counts["sleeping"], counts["failed"]) == (1, 1, 1)
        assert sum(counts.values()) == 3
        assert await app.read.workflow_count(status="failed", name="order") == 1
        assert await app.read.workflow_count(name="no-such") == 0
        one = await app.read.workflow_info("order:o3")
        assert one is not None
        assert str(one.status) == "failed"
        assert await app.read.workflow_info("order:nope") is None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_dead_letter_counts_are_exact_and_follow_decisions(kind: str, tmp_path: Path) -> None:
    app = _app(kind, tmp_path)

    @app.on("chores.*", name="fragile", retry=RetryPolicy(maximum_attempts=1))
    async def fragile(event: Event, ctx: object) -> None:
        raise ValueError("nope")

    async with app:
        for i in range(12):
            await app.publish(Event(type="chores.due", source="t", subject=f"c{i}"))
        await app.drain(HANG_GUARD)
        await _until(lambda: _caught_up(app))
        assert await app.read.open_dead_letters() == 12
        assert len(await DeadLetterQueue(app.store).list()) == 12  # the fold agrees
        page = await app.read.dead_letters(limit=5)
        assert len(page.items) == 5
        assert page.items[0].error_type == "ValueError"
        assert page.items[0].subscription == "fragile"
        letters = await app.read.all_dead_letters()
        assert len({letter.id for letter in letters}) == 12
        await app.dead_letters.discard(letters[0].id)
        await app.dead_letters.redrive(letters[1].id)
        await app.drain(HANG_GUARD)
        await _until(lambda: _caught_up(app))
        counts = (await app.read.dead_letter_counts())["fragile"]
        # the redriven delivery failed again: its letter stays redriven and a new one parks
        assert counts == {"parked": 11, "discarded": 1, "redriven": 1}
        health = await app.health()
        assert health.dead_letters == 11
        names = {p.name for p in health.projections}
        assert names == {
            "workflows",
            "dead_letters",
            "work_items",
            "platform_health",
            "activity",
            "events",
        }
        assert all(p.lag == 0 for p in health.projections)


async def test_work_item_timeline_links_platforms_actions_and_workflows(tmp_path: Path) -> None:
    app = _app("sqlite", tmp_path)

    @app.workflow("implement", on="linear.issue.updated", key=lambda e: e.correlation_id)
    async def implement(wf: Workflow, event: Event) -> str:
        await wf.step(_noop, "plan")
        pr = await wf.wait_for("github.pull_request.opened", correlation_id=event.correlation_id)
        return str(pr.data["number"])

    async with app:
        issue = Event(
            type="linear.issue.updated",
            source="linear",
            subject="issue/1",
            correlation_id="ENG-123",
            data={"title": "secret title text"},
        )
        await app.publish(issue)
        await app.publish(Event(type="linear.issue.updated", source="linear", correlation_id="X-9"))

        async def waiting() -> bool:
            row = await app.read.workflow("implement:ENG-123")
            return row is not None and row["status"] == "waiting"

        await _until(waiting)
        pr = Event(
            type="github.pull_request.opened",
            source="github",
            correlation_id="ENG-123",
            causation_id=issue.id,
            data={"number": 7},
        )
        await app.publish(pr)

        async def done() -> bool:
            row = await app.read.workflow("implement:ENG-123")
            return row is not None and row["status"] == "completed" and await _caught_up(app)

        await _until(done)
        timeline = (await app.read.timeline("ENG-123")).items
        kinds = [(e["kind"], e["type"]) for e in timeline]
        assert kinds[0] == ("inbound", "linear.issue.updated")
        assert ("workflow", "contexten.workflow.started") in kinds
        assert ("workflow", "contexten.workflow.step_completed") in kinds
        assert ("inbound", "github.pull_request.opened") in kinds
        assert kinds[-1] == ("workflow", "contexten.workflow.completed")
        positions = [e["position"] for e in timeline]
        assert positions == sorted(positions)
        by_type = {e["type"]: e for e in timeline}
        assert by_type["github.pull_request.opened"]["causation_id"] == issue.id
        assert by_type["contexten.workflow.started"]["workflow_id"] == "implement:ENG-123"
        assert all("secret" not in str(e) for e in timeline)
        page = await app.read.timeline("ENG-123", limit=2)
        assert page.next_cursor is not None
        more = await app.read.timeline("ENG-123", after=int(page.next_cursor), limit=200)
        assert [e["position"] for e in page.items + more.items] == positions
        found = await app.read.search_work_items("ENG")
        assert [w["correlation_id"] for w in found] == ["ENG-123"]
        assert found[0]["sources"] == ["contexten.workflows", "github", "linear"]
        platforms = {p["platform"]: p for p in await app.read.platforms()}
        assert platforms["linear"]["webhooks"] == 2
        assert platforms["github"]["webhooks"] == 1


async def _noop(label: str) -> str:
    return label


class TypeCounts(Projection):
    name = "type_counts"
    tables = (Table("type_counts", {"type": "text", "n": "int"}, key=("type",)),)
    patterns = ("demo.**",)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        row = await batch.get("type_counts", record.event.type)
        n = row["n"] + 1 if row else 1
        batch.put("type_counts", {"type": record.event.type, "n": n})


async def test_a_custom_projection_runs_survives_restart_and_rebuilds(tmp_path: Path) -> None:
    app = _app("sqlite", tmp_path)
    app.add_projection(TypeCounts())
    async with app:
        for _ in range(5):
            await app.publish(Event(type="demo.thing", source="t"))
        await _until(lambda: _caught_up(app))
        assert await app.projections.get("type_counts", "demo.thing") == {
            "type": "demo.thing",
            "n": 5,
        }
    again = _app("sqlite", tmp_path)
    again.add_projection(TypeCounts())
    async with again:
        await again.publish(Event(type="demo.thing", source="t"))
        await _until(lambda: _caught_up(again))
        assert (await again.projections.get("type_counts", "demo.thing") or {})["n"] == 6
        assert await again.projections.rebuild("type_counts") == await again.store.head()
        await again.publish(Event(type="demo.other", source="t"))
        await _until(lambda: _caught_up(again))
        rows = await again.projections.query("type_counts", Query(order=("type",)))
        assert [(r["type"], r["n"]) for r in rows] == [("demo.other", 1), ("demo.thing", 6)]


async def test_metrics_show_projection_lag_and_exact_dead_letters(tmp_path: Path) -> None:
    from contexten.observability.app_metrics import instrument_app
    from contexten.observability.metrics import Metrics

    app = _app("sqlite", tmp_path)

    @app.on("chores.*", name="fragile", retry=RetryPolicy(maximum_attempts=1))
    async def fragile(event: Event, ctx: object) -> None:
        raise ValueError("nope")

    metrics = Metrics()
    instrument_app(metrics, app.health)
    async with app:
        for i in range(3):
            await app.publish(Event(type="chores.due", source="t", subject=f"c{i}"))
        await app.drain(HANG_GUARD)
        await metrics.refresh()
        text = metrics.render().decode()
        head = float(await app.store.head())
    assert 'contexten_projection_lag{projection="dead_letters"} 0.0' in text
    assert "contexten_dead_letters 3.0" in text
    assert f'contexten_projection_position{{projection="workflows"}} {head}' in text
