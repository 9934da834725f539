"""``contexten projections``, ``work-items``, ``workflows list`` pages and ``--as-of`` reads,
against a SQLite store written by a real App (stopped before the commands run, so the CLI
catches the read models up itself)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from contexten import App, Event, Workflow
from contexten.cli import cli
from contexten.clock import WallClock


async def _noop(label: str) -> str:
    return label


def _write(url: str) -> datetime:
    """Two work items and three workflows; return a time between the first and last events."""

    async def main() -> datetime:
        app = App(url, clock=WallClock())

        @app.workflow("triage", on="linear.issue.created", key=lambda e: e.correlation_id)
        async def triage(wf: Workflow, event: Event) -> str:
            return str(await wf.step(_noop, "labelled"))

        async with app:
            for key in ("ENG-1", "ENG-2", "OPS-9"):
                await app.publish(
                    Event(type="linear.issue.created", source="linear", correlation_id=key)
                )
            await app.drain(30)
            for _ in range(3000):
                if len(await app.list_workflows("completed")) == 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            middle = datetime.now(UTC)
            await asyncio.sleep(0.05)
            await app.publish(
                Event(type="github.pull_request.opened", source="github", correlation_id="ENG-1")
            )
        return middle

    return asyncio.run(main())


@pytest.fixture
def written(tmp_path: Path) -> tuple[str, datetime]:
    url = f"sqlite:///{tmp_path / 'read.db'}"
    return url, _write(url)


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_projections_list_status_and_rebuild(written: tuple[str, datetime]) -> None:
    url, _ = written
    listed = [
        json.loads(x) for x in run("projections", "list", "--store", url, "--json").splitlines()
    ]
    names = [p["name"] for p in listed]
    assert names == [
        "workflows",
        "dead_letters",
        "work_items",
        "platform_health",
        "activity",
        "events",
    ]
    status = json.loads(run("projections", "status", "--store", url, "work_items"))
    assert status["name"] == "work_items"
    assert status["head"] > 0
    rebuilt = CliRunner().invoke(cli, ["projections", "rebuild", "--store", url, "workflows"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"rebuilt workflows up to position {status['head']}" in rebuilt.output
    after = json.loads(run("projections", "status", "--store", url, "workflows"))
    assert (after["position"], after["lag"]) == (status["head"], 0)
    unknown = CliRunner().invoke(cli, ["projections", "rebuild", "--store", url, "nope"])
    assert unknown.exit_code == 1
    assert "no projection 'nope'" in unknown.output


def test_workflows_list_pages_with_a_cursor(written: tuple[str, datetime]) -> None:
    url, _ = written
    result = CliRunner().invoke(
        cli, ["workflows", "list", "--store", url, "--json", "--limit", "2"]
    )
    assert result.exit_code == 0
    first = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(first) == 2
    cursor = result.stderr.split("--cursor ")[1].strip()
    rest = run("workflows", "list", "--store", url, "--json", "--limit", "2", "--cursor", cursor)
    ids = [r["workflow_id"] for r in first] + [json.loads(x)["workflow_id"] for x in rest.split()]
    assert sorted(ids) == ["triage:ENG-1", "triage:ENG-2", "triage:OPS-9"]
    bad = CliRunner().invoke(cli, ["workflows", "list", "--store", url, "--cursor", "x!"])
    assert bad.exit_code == 1
    assert "invalid cursor" in bad.output


def test_work_item_timeline_now_and_as_of(written: tuple[str, datetime]) -> None:
    url, middle = written
    shown = run("work-items", "show", "--store", url, "ENG-1", "--json")
    now = [json.loads(x) for x in shown.splitlines()]
    types = [e["type"] for e in now]
    assert types[0] == "linear.issue.created"
    assert "contexten.workflow.step_completed" in types
    assert types[-1] == "github.pull_request.opened"
    then = run(
        "work-items", "show", "--store", url, "ENG-1", "--json", "--as-of", middle.isoformat()
    )
    assert [json.loads(x)["type"] for x in then.splitlines()] == types[:-1]
    before = (middle - timedelta(days=1)).isoformat()
    empty = CliRunner().invoke(
        cli, ["work-items", "show", "--store", url, "ENG-1", "--as-of", before]
    )
    assert empty.exit_code == 1
    assert "by then" in empty.output
    assert "ENG-1" in run("work-items", "search", "--store", url, "ENG")
    assert "OPS-9" not in run("work-items", "search", "--store", url, "ENG")


def test_events_and_workflows_as_of(written: tuple[str, datetime]) -> None:
    url, middle = written
    listed = run("events", "list", "--store", url, "--json")
    now = [json.loads(x)["type"] for x in listed.splitlines()]
    assert now[0] == "github.pull_request.opened"
    then = run("events", "list", "--store", url, "--json", "--as-of", middle.isoformat())
    assert "github.pull_request.opened" not in then
    shown = json.loads(
        run("workflows", "show", "--store", url, "triage:ENG-1", "--as-of", middle.isoformat())
    )
    assert shown["status"] == "completed"
    long_ago = (middle - timedelta(days=1)).isoformat()
    missing = CliRunner().invoke(
        cli, ["workflows", "show", "--store", url, "triage:ENG-1", "--as-of", long_ago]
    )
    assert missing.exit_code == 1
    bad = CliRunner().invoke(cli, ["events", "list", "--store", url, "--as-of", "yesterday"])
    assert bad.exit_code == 2
    assert "not an ISO 8601 time" in bad.output
