"""``contexten replay check`` against a SQLite store written by a real engine, with the new
code in an app file as a deploy would ship it."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from contexten.cli import cli
from contexten.events import Event
from contexten.store import create_store
from contexten.workflows import Workflow, WorkflowEngine

APP = """
from contexten import App

app = App("memory://")

def build(tag):
    return tag

@app.workflow("release", version={version})
async def release(wf, _):
    await wf.step(build, "a", name="{first}")
    await wf.wait_for("release.approved")
    return await wf.step(build, "b", name="publish")
"""


def _record(url: str) -> None:
    """One finished instance and one waiting for approval, on version 1."""

    async def main() -> None:
        store = create_store(url)
        await store.open()
        engine = WorkflowEngine(store)

        @engine.workflow("release")
        async def release(wf: Workflow, _: Any) -> Any:
            await wf.step(lambda: "a", name="build")
            await wf.wait_for("release.approved")
            return await wf.step(lambda: "b", name="publish")

        await engine.start()
        done = await engine.start_workflow("release", None, workflow_id="r-done")
        await engine.store.append("approvals", [Event(type="release.approved")])
        assert await done.result(timeout=30) == "b"
        await engine.start_workflow("release", None, workflow_id="r-open")
        for _ in range(3000):
            if str((await engine.get_workflow("r-open")).status) == "waiting":
                break
            await asyncio.sleep(0.01)
        await engine.stop()
        await store.close()

    asyncio.run(main())


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    _record(url)
    return url


def _app(tmp_path: Path, name: str, *, version: int = 1, first: str = "build") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(APP.format(version=version, first=first)))
    return f"{path}:app"


def test_a_compatible_change_passes(store_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["replay", "check", "--app", _app(tmp_path, "same"), "--store", store_url]
    )
    assert result.exit_code == 0, result.output
    assert "checked 2 histories (1 open), 0 divergence(s), 0 breaking" in result.output


def test_a_breaking_change_fails_and_names_the_first_difference(
    store_url: str, tmp_path: Path
) -> None:
    app = _app(tmp_path, "renamed", first="compile")
    args = ["replay", "check", "--app", app, "--store", store_url, "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    report = json.loads(result.stdout.splitlines()[0])
    assert (report["ok"], report["checked"], report["breaking"]) == (False, 2, 1)
    by_id = {d["workflow_id"]: d for d in report["divergences"]}
    assert set(by_id) == {"r-done", "r-open"}
    assert by_id["r-open"]["open"]
    assert not by_id["r-done"]["open"]
    first = by_id["r-open"]
    assert (first["seq"], first["version"], first["reason"]) == (1, "1", "nondeterminism")
    assert first["event_type"] == "contexten.workflow.step_completed"
    assert (first["expected"], first["produced"]) == ("step 'build'", "step 'compile'")
    assert "1 open instance(s) would break" in result.stderr

    table = CliRunner().invoke(cli, args[:-1])
    assert table.exit_code == 1
    assert "r-open" in table.output
    assert "step 'compile'" in table.output


def test_a_version_dropped_while_instances_are_open_fails(store_url: str, tmp_path: Path) -> None:
    app = _app(tmp_path, "v2only", version=2)
    result = CliRunner().invoke(cli, ["replay", "check", "--app", app, "--store", store_url])
    assert result.exit_code == 1
    assert "version_not_registered" in result.output or "not registered" in result.output


def test_since_limits_the_closed_instances_checked(store_url: str, tmp_path: Path) -> None:
    app = _app(tmp_path, "renamed_since", first="compile")  # (a module name of its own)
    args = ["replay", "check", "--app", app, "--store", store_url, "--json", "--since"]
    future = CliRunner().invoke(cli, [*args, "2999-01-01T00:00:00+00:00"])
    report = json.loads(future.stdout.splitlines()[0])
    assert report["checked"] == 1
    assert report["skipped"] == {"closed_before_window": 1}
    bad = CliRunner().invoke(cli, [*args, "soon"])
    assert bad.exit_code == 2
    assert "neither a duration" in bad.output
