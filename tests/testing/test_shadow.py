"""Shadow replay: recorded webhooks re-fed into new code, isolated, and the differences."""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contexten.app import pinned_apps
from contexten.events import Event
from contexten.ingress.loader import load_app
from contexten.integrations.github import GitHubClient
from contexten.store import EventStore, create_store
from contexten.store.memory import MemoryEventStore
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox, SandboxConfig
from contexten.testing.sandbox.app import SANDBOX_TOKEN
from contexten.testing.shadow import shadow_replay

REPO = "acme/api"
APP = """
from contexten import App

app = App()


@app.on("github.issues.opened", name="welcome")
async def welcome(event, ctx):
    if {rule}:
        await ctx.agents.github.create_issue_comment(
            "{repo}", event.data["issue"]["number"], "Thanks!",
            idempotency_key=ctx.idempotency_key,
        )


@app.workflow("triage", on="github.issues.opened", key=lambda e: e.correlation_id)
async def triage(wf, event):
    return event.data["issue"]["title"]
"""


def _app_file(tmp_path: Path, name: str, rule: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(APP.format(rule=rule, repo=REPO)))
    return f"{path}:app"


async def _record(reference: str, store: EventStore | None = None) -> EventStore:
    """Run the old app on three issues the way production would have, into a store."""
    store = store or MemoryEventStore()
    sandbox = Sandbox(SandboxConfig(webhook_url=None))
    async with VirtualClock(datetime.now(UTC), auto_advance=True) as clock:
        with pinned_apps(store, clock, sandbox.clients(clock=clock)):
            app = load_app(reference)
        async with app:
            for title in ("Login bug", "Add dark mode", "Crash bug on save"):
                issue = sandbox.github.create_issue(REPO, title)
                await app.publish(
                    Event(
                        type="github.issues.opened",
                        source="github",
                        correlation_id=f"GH-{issue['number']}",
                        data={
                            "action": "opened",
                            "issue": issue,
                            "repository": {"full_name": REPO},
                        },
                    )
                )
            await app.drain(timeout=30)
    return store


async def test_the_same_code_makes_no_difference_and_a_changed_rule_exact_ones(
    tmp_path: Path,
) -> None:
    old = _app_file(tmp_path, "shadow_old", "True")
    recorded = await _record(old)
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)

    same = await shadow_replay(
        recorded, lambda: load_app(_app_file(tmp_path, "shadow_same", "True")), start, end
    )
    assert same.webhooks == 3
    assert same.same, same.differences

    changed = _app_file(tmp_path, "shadow_new", "'bug' in event.data['issue']['title'].lower()")
    report = await shadow_replay(recorded, lambda: load_app(changed), start, end)
    assert [d.to_dict() for d in report.differences] == [
        {
            "kind": "action",
            "name": "contexten.action.github.create_issue_comment",
            "work_item": "GH-2",
            "recorded": 1,
            "shadow": 0,
        }
    ]


async def test_a_shadow_run_builds_no_client_from_real_credentials(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("CONTEXTEN_GITHUB_TOKEN", "ghp_real_secret_canary")
    recorded = await _record(_app_file(tmp_path, "shadow_cred_old", "True"))
    seen: dict[str, Any] = {}

    def load() -> Any:
        seen["token"] = os.environ.get("CONTEXTEN_GITHUB_TOKEN")
        app = load_app(_app_file(tmp_path, "shadow_cred_new", "True"))
        client = app.clients.get(GitHubClient)
        seen["client"] = (client.http.settings.token, client.http.settings.base_url)
        return app

    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    report = await shadow_replay(recorded, load, start, end)
    assert report.same
    assert seen["token"] is None, "credentials are out of the environment while it loads"
    assert seen["client"] == (SANDBOX_TOKEN, "http://127.0.0.1/github"), "the sandbox's client"
    assert os.environ["CONTEXTEN_GITHUB_TOKEN"] == "ghp_real_secret_canary", "and put back"


def test_the_command_reports_the_differences(tmp_path: Path) -> None:
    import asyncio
    import json

    from click.testing import CliRunner

    from contexten.cli import cli

    url = f"sqlite:///{tmp_path / 'recorded.db'}"

    async def record() -> None:
        store = create_store(url)
        await store.open()
        try:
            await _record(_app_file(tmp_path, "shadow_cli_old", "True"), store)
        finally:
            await store.close()

    asyncio.run(record())
    changed = _app_file(tmp_path, "shadow_cli_new", "'bug' in event.data['issue']['title'].lower()")
    args = ["replay", "shadow", "--app", changed, "--store", url, "--from", "1h"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert (report["webhooks"], len(report["differences"])) == (3, 1)
    again = _app_file(tmp_path, "shadow_cli_new2", "'bug' in event.data['issue']['title'].lower()")
    table = CliRunner().invoke(
        cli, ["replay", "shadow", "--app", again, "--store", url, "--from", "1h"]
    )
    assert table.exit_code == 0, table.output
    assert "GH-2" in table.output
    assert "1 difference(s)" in table.output


async def test_an_app_built_before_the_shadow_run_is_refused(tmp_path: Path) -> None:
    import pytest

    from contexten.exceptions import ConfigurationError

    reference = _app_file(tmp_path, "shadow_stale", "True")
    recorded = await _record(reference)  # imports the module: its App is not the shadow's
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ConfigurationError, match="built inside it"):
        await shadow_replay(recorded, lambda: load_app(reference), start, end)
