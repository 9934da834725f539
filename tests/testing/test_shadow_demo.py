"""Shadow replay over the demo's recorded scenario, which spans GitHub, Linear, Slack and a
Codegen agent: the same app makes no difference, a changed rule exactly its own, and code
acting on Linear or Slack finds there what it found for real (the sandbox is seeded from the
recording), without any client built from real credentials."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from contexten.cli.demo import DemoOptions, DemoSession
from contexten.ingress.loader import load_app
from contexten.integrations.codegen import CodegenClient
from contexten.integrations.github import GitHubClient
from contexten.integrations.linear import LinearClient
from contexten.integrations.slack import SlackClient
from contexten.store import EventStore, create_store
from contexten.testing.sandbox.app import SANDBOX_TOKEN
from contexten.testing.shadow import ShadowReport, shadow_replay

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVTEAM = REPO_ROOT / "examples" / "devteam.py"
CANARIES = {
    "CONTEXTEN_GITHUB_TOKEN": "ghp_real_canary",
    "CONTEXTEN_LINEAR_API_KEY": "lin_api_real_canary",
    "CONTEXTEN_SLACK_BOT_TOKEN": "xoxb-real-canary",
    "CONTEXTEN_CODEGEN_TOKEN": "cg-real-canary",
}

EXTRA_RULES = '''

_recorded_create_app = create_app


def create_app() -> App:
    """The dev-team app plus two rules that act on Linear and Slack."""
    app = _recorded_create_app()

    @app.on("linear.issue.created", name="devteam.acknowledge")
    async def acknowledge(event: Event, ctx: HandlerContext) -> None:
        await ctx.agents.linear.create_comment(
            event.data["data"]["id"], "Thanks, we are on it.",
            idempotency_key=ctx.idempotency_key,
        )

    @app.on("slack.block_actions", name="devteam.seen")
    async def seen(event: Event, ctx: HandlerContext) -> None:
        container = event.data["container"]
        await ctx.agents.slack.add_reaction(
            container["channel_id"], container["message_ts"], "eyes",
            idempotency_key=ctx.idempotency_key,
        )

    return app
'''


@pytest.fixture(autouse=True)
def _forget_the_example() -> Iterator[None]:
    yield
    for name in [m for m in sys.modules if m.startswith("devteam")]:
        del sys.modules[name]


async def _record_demo(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    options = DemoOptions(
        port=0,
        store_url=url,
        cwd=REPO_ROOT,
        agent_seconds=0.2,
        exit_when_done=True,
        timeout=60.0,
    )
    result = await DemoSession(options, Console(file=io.StringIO(), width=160)).run()
    assert [o.status for o in result.outcomes] == ["completed", "compensated"]
    return url


def _variant(tmp_path: Path, name: str, old: str = "", new: str = "", extra: str = "") -> str:
    source = DEVTEAM.read_text()
    assert old in source, f"the example changed: {old!r} is gone"
    path = tmp_path / f"{name}.py"
    path.write_text(source.replace(old, new, 1) + extra)
    return f"{path}:create_app"


async def _shadow(url: str, reference: str, seen: list[Any] | None = None) -> ShadowReport:
    def load() -> Any:
        app = load_app(reference, cwd=REPO_ROOT)
        if seen is not None:
            seen.append(app)
        return app

    now = datetime.now(UTC)
    store: EventStore = create_store(url)
    async with store:
        return await shadow_replay(store, load, now - timedelta(hours=1), now + timedelta(hours=1))


async def _inbound_types(url: str) -> list[str]:
    """The types of the platforms' events the recording holds (echoes of ours included)."""
    store: EventStore = create_store(url)
    async with store:
        records = await store.read_all(after=0, limit=100_000)
    prefixes = ("github.", "linear.", "slack.", "codegen.")
    return [r.event.type for r in records if r.event.type.startswith(prefixes)]


def _diffs(report: ShadowReport) -> list[tuple[str, str, str, int, int]]:
    return [(d.kind, d.name, d.work_item, d.recorded, d.shadow) for d in report.differences]


async def test_the_same_app_makes_no_difference_and_builds_no_real_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await _record_demo(tmp_path)
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    apps: list[Any] = []

    report = await _shadow(url, _variant(tmp_path, "devteam_same"), apps)

    assert report.same, _diffs(report)
    inbound = await _inbound_types(url)
    # The people's webhooks are the scenario's; the agent's run events are as many as its
    # status changes the watcher saw (a quick run can go from queued to done between two
    # polls on a loaded machine): every one of them is re-fed, and no echo of our own.
    assert report.webhooks + report.echoes_skipped == len(inbound)
    assert report.echoes_skipped == 13
    people = [t for t in inbound if not t.startswith("codegen.")]
    assert len(people) - report.echoes_skipped == 6, "the scenario's webhooks from people"
    assert report.webhooks == 6 + len(inbound) - len(people), "and every agent run event"
    (app,) = apps
    for kind in (GitHubClient, LinearClient, SlackClient, CodegenClient):
        settings = app.clients.get(kind).http.settings
        assert settings.token == SANDBOX_TOKEN, kind.__name__
        assert settings.base_url.startswith("http://127.0.0.1/"), kind.__name__
    for name, value in CANARIES.items():
        assert os.environ[name] == value, "credentials are put back after the run"


async def test_a_changed_rule_touching_linear_or_slack_reports_exactly_its_differences(
    tmp_path: Path,
) -> None:
    url = await _record_demo(tmp_path)

    no_done = _variant(
        tmp_path,
        "devteam_no_done",
        '    await wf.step(linear.move_issue, issue["id"], state="Done")\n',
    )
    assert _diffs(await _shadow(url, no_done)) == [
        ("action", "contexten.action.linear.move_issue", "ENG-1", 3, 2)
    ]

    quiet = _variant(
        tmp_path,
        "devteam_quiet",
        "        await wf.step(\n            slack.post_message,\n",
        "        await wf.step(\n            lambda *_: None,\n",
    )
    assert _diffs(await _shadow(url, quiet)) == [
        ("action", "contexten.action.slack.post_message", "ENG-2", 1, 0)
    ]


async def test_new_rules_acting_on_linear_and_slack_find_the_recorded_objects(
    tmp_path: Path,
) -> None:
    url = await _record_demo(tmp_path)
    report = await _shadow(url, _variant(tmp_path, "devteam_extra", extra=EXTRA_RULES))
    assert _diffs(report) == [
        ("action", "contexten.action.linear.create_comment", "ENG-1", 0, 1),
        ("action", "contexten.action.linear.create_comment", "ENG-2", 0, 1),
        ("action", "contexten.action.slack.add_reaction", "ENG-1", 0, 1),
    ], "no dead letter: the issues and the approval message exist in the shadow's sandbox"
