"""``contexten workflows`` against a SQLite store written by a real engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from contexten.cli import cli
from contexten.store import create_store
from contexten.workflows import Workflow, WorkflowEngine

from ._audit import audit_events


async def _double(x: int) -> int:
    return 2 * x


def _run_workflows(url: str) -> None:
    """Complete one workflow and leave another sleeping, then stop (like a process exiting)."""

    async def main() -> None:
        store = create_store(url)
        await store.open()
        engine = WorkflowEngine(store)

        @engine.workflow("doubler")
        async def doubler(wf: Workflow, x: Any) -> int:
            return int(await wf.step(_double, x))

        @engine.workflow("napper")
        async def napper(wf: Workflow, x: Any) -> str:
            await wf.step(_double, 1)
            await wf.sleep(3600)
            return "rested"

        await engine.start()
        done = await engine.start_workflow("doubler", 21, workflow_id="wf-done")
        assert await done.result(timeout=30) == 42
        await engine.start_workflow("napper", None, workflow_id="wf-sleeping")
        for _ in range(3000):
            if str((await engine.get_workflow("wf-sleeping")).status) == "sleeping":
                break
            await asyncio.sleep(0.01)
        await engine.stop()
        await store.close()

    asyncio.run(main())


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    _run_workflows(url)
    return url


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_list_shows_statuses_and_filters(store_url: str) -> None:
    rows = [
        json.loads(x) for x in run("workflows", "list", "--store", store_url, "--json").splitlines()
    ]
    assert {(r["workflow_id"], r["status"]) for r in rows} == {
        ("wf-done", "completed"),
        ("wf-sleeping", "sleeping"),
    }
    sleeping = run("workflows", "list", "--store", store_url, "--json", "--status", "sleeping")
    assert [json.loads(x)["workflow_id"] for x in sleeping.splitlines()] == ["wf-sleeping"]


def test_list_counts_in_flight_instances_per_version(store_url: str) -> None:
    """The text listing ends with the open instances per workflow version (from the read
    model's counters): the sleeping napper, not the completed doubler."""
    out = run("workflows", "list", "--store", store_url)
    assert "in flight: napper v1: 1" in out
    assert "in flight: doubler" not in out


def test_show_includes_result_and_history(store_url: str) -> None:
    shown = json.loads(run("workflows", "show", "--store", store_url, "wf-done"))
    assert shown["status"] == "completed"
    assert shown["result"] == 42
    assert any(h["type"].endswith("step_completed") for h in shown["history"])


def test_cancel_requests_once_and_refuses_ended_instances(store_url: str) -> None:
    assert "cancel requested: wf-sleeping" in run(
        "workflows", "cancel", "--store", store_url, "wf-sleeping"
    )
    again = CliRunner().invoke(cli, ["workflows", "cancel", "--store", store_url, "wf-sleeping"])
    assert again.exit_code == 1
    done = CliRunner().invoke(cli, ["workflows", "cancel", "--store", store_url, "wf-done"])
    assert done.exit_code == 1
    assert "already ended" in done.output


def test_unknown_instance_is_a_clear_error(store_url: str) -> None:
    result = CliRunner().invoke(cli, ["workflows", "show", "--store", store_url, "nope"])
    assert result.exit_code == 1
    assert "no workflow instance 'nope'" in result.output


def test_redrive_refuses_an_instance_that_is_not_failed(store_url: str) -> None:
    result = CliRunner().invoke(cli, ["workflows", "redrive", "--store", store_url, "wf-done"])
    assert result.exit_code == 1
    assert "neither failed nor blocked" in result.output


def test_cancel_and_redrive_are_audit_events(store_url: str) -> None:
    run("workflows", "cancel", "--store", store_url, "wf-sleeping", "--reason", "wrong issue")
    CliRunner().invoke(cli, ["workflows", "cancel", "--store", store_url, "wf-done"])
    CliRunner().invoke(cli, ["workflows", "redrive", "--store", store_url, "wf-done"])
    CliRunner().invoke(cli, ["workflows", "redrive", "--store", store_url, "nope"])
    audit = audit_events(store_url)
    assert [(a["type"], a["target"], a["outcome"]) for a in audit] == [
        ("contexten.audit.workflows.cancel", "wf-sleeping", "requested"),
        ("contexten.audit.workflows.cancel", "wf-done", "unchanged"),
        ("contexten.audit.workflows.redrive", "wf-done", "unchanged"),
        ("contexten.audit.workflows.redrive", "nope", "not found"),
    ]
    assert "wrong issue" in audit[0]["text"]
    assert all(a["principal"]["role"] == "admin" for a in audit)


MIGRATION_APP = """
from contexten import App

app = App()


def step(tag):
    return tag


@app.workflow("deploy", version=2)
async def deploy(wf, _):
    await wf.step(step, "one-prime", name="one-prime")  # differs from v1 at call 1
    await wf.step(step, "two", name="two")
    await wf.wait_for("deploy.go")
    return "v2"
"""


def _blocked_instance(url: str) -> None:
    """A v1 ``deploy`` instance that completed two steps and waits, then blocked by an
    engine on which only version 2 is registered."""

    async def main() -> None:
        async with create_store(url) as store:
            engine = WorkflowEngine(store)

            @engine.workflow("deploy", version=1)
            async def deploy_v1(wf: Workflow, _: Any) -> str:
                await wf.step(_double, 1, name="one")
                await wf.step(_double, 2, name="two")
                await wf.wait_for("deploy.go")
                return "v1"

            await engine.start()
            await engine.start_workflow("deploy", None, workflow_id="d1")
            await _until(engine, "d1", "waiting")
            await engine.stop()
            engine = WorkflowEngine(store)
            engine.register(deploy_v1, name="deploy", version=2)  # any v2: v1 is gone
            await engine.start()
            await _until(engine, "d1", "blocked")
            await engine.stop()

    asyncio.run(main())


async def _until(engine: WorkflowEngine, wid: str, status: str) -> None:
    for _ in range(3000):
        if str((await engine.get_workflow(wid)).status) == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{wid} never became {status}")


def test_migrate_names_the_effects_it_would_supersede_and_needs_force(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrate.db'}"
    _blocked_instance(url)
    (tmp_path / "deploy_v2.py").write_text(MIGRATION_APP)
    base = ["workflows", "migrate", "--store", url, "--app", f"{tmp_path / 'deploy_v2.py'}:app"]

    refused = CliRunner().invoke(cli, [*base, "d1", "--to-version", "2"])
    assert refused.exit_code == 1
    assert "already performed: #1 step 'one' (completed)" in refused.output
    assert "already performed: #2 step 'two' (completed)" in refused.output
    assert "was not migrated" in refused.output

    dry = run(*base, "d1", "--to-version", "2", "--dry-run")
    assert "would migrate: d1 from version 1 to 2; resumes at call #1" in dry
    assert "superseded: #3 wait 'deploy.go' (in_flight)" in dry
    shown = json.loads(run("workflows", "show", "--store", url, "d1"))
    assert shown["status"] == "blocked", "neither the refusal nor the dry run recorded a move"

    forced = run(*base, "d1", "--to-version", "2", "--force")
    assert "migrated: d1 from version 1 to 2; resumes at call #1 (0 of 3" in forced
    assert "already performed (not undone): #1 step 'one' (completed)" in forced
    shown = json.loads(run("workflows", "show", "--store", url, "d1"))
    assert (shown["status"], shown["version"]) == ("running", "2")
    assert shown["history"][-1]["data"]["superseded_events"]
    audit = [(a["target"], a["outcome"]) for a in audit_events(url)]
    assert audit == [("d1", "refused"), ("d1", "migrated")]
