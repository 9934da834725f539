"""``contexten demo``: the dev-team app, end to end against the sandbox, ends exactly as scripted.

The scenario runs in-process with the real servers on loopback (the sandbox's webhooks go
over HTTP to the app's ingress), then the sandbox's state is checked object by object: one
merged pull request, one approval message, everything of the failed work item rolled back,
and nothing made twice.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from contexten.agents.runtime import ECHO_EVENT
from contexten.cli.demo import DemoError, DemoOptions, DemoSession
from contexten.events import Event
from contexten.store import create_store

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HANG_GUARD = 60.0
BOT = "contexten-sandbox[bot]"


@pytest.fixture(autouse=True)
def _forget_the_example() -> Iterator[None]:
    """The demo imports ``examples/devteam.py`` as module ``devteam``; other tests load
    other files of that name, so do not leave it imported."""
    yield
    sys.modules.pop("devteam", None)


def options(tmp_path: Path, **changes: object) -> DemoOptions:
    base = DemoOptions(
        port=0,
        store_url=f"sqlite:///{tmp_path / 'demo.db'}",
        cwd=REPO_ROOT,
        agent_seconds=0.2,
        exit_when_done=True,
        timeout=HANG_GUARD,
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


async def stored_events(url: str) -> list[Event]:
    store = create_store(url)
    await store.open()
    try:
        return [r.event for r in await store.read_all(limit=100_000)]
    finally:
        await store.close()


async def test_the_scripted_scenario_ends_exactly_as_scripted(tmp_path: Path) -> None:
    output = io.StringIO()
    session = DemoSession(options(tmp_path), Console(file=output, width=160))
    result = await session.run()
    sandbox = session.sandbox
    assert sandbox is not None

    happy, failing = result.outcomes
    assert (happy.identifier, happy.status) == ("ENG-1", "completed")
    assert happy.result is not None
    assert happy.result["pull_request"] == 2
    assert happy.result["merged"] is True
    assert (failing.identifier, failing.status) == ("ENG-2", "compensated")
    assert failing.error is not None
    assert "ended failed" in failing.error

    # Linear: one done, one back where it was; no comment mirrored (ours are echoes).
    issues = [sandbox.linear.issue_json(i) for i in sandbox.linear.issues.values()]
    assert {i["identifier"]: i["state"]["name"] for i in issues} == {
        "ENG-1": "Done",
        "ENG-2": "Todo",
    }
    assert sandbox.linear.comments == {}

    # GitHub: the drafts closed, the agent's pull request merged, one link comment.
    repo = sandbox.github.repos["acme/api"]
    pulls = {
        number: (pr["user"]["login"], pr["draft"], pr["state"], pr["merged"])
        for number, pr in repo.issues.items()
    }
    assert pulls == {
        1: (BOT, True, "closed", False),
        2: ("codegen-sh[bot]", False, "closed", True),
        3: (BOT, True, "closed", False),
    }
    assert repo.issues[2]["title"].startswith("ENG-1: ")
    [comment] = repo.comments.values()
    assert comment["issue_url"].endswith("/2")
    assert comment["body"].startswith("Implements [ENG-1](")

    # Slack: one approval (answered, buttons gone) and one failure notice.
    messages = list(sandbox.slack.messages["C0ENG"].values())
    approvals = [
        m for m in messages if (m.get("metadata") or {}).get("event_type") == "contexten_approval"
    ]
    [approval] = approvals
    assert approval["text"] == "ENG-1: approved by <@U0ADA>"
    assert approval["blocks"] == []
    [notice] = [m for m in messages if m is not approval]
    assert "could not implement ENG-2" in notice["text"]
    assert all(not m for c, m in sandbox.slack.messages.items() if c != "C0ENG")

    # Codegen: one run completed, one failed (a failed run is left as it is, not cancelled).
    runs = {r["metadata"]["correlation_id"]: r["status"] for r in sandbox.codegen.runs.values()}
    assert runs == {"ENG-1": "completed", "ENG-2": "failed"}

    # Every webhook the sandbox sent was accepted by the app.
    assert [d for d in sandbox.outbox if d.status not in (200, 202)] == []

    events = await stored_events(result.store_url)
    prefix = "contexten.action."
    actions = Counter(e.type.removeprefix(prefix) for e in events if e.type.startswith(prefix))
    assert actions == {
        "linear.move_issue": 4,
        "github.create_pull_request": 2,
        "codegen.create_agent_run": 2,
        "github.create_issue_comment": 1,
        "github.close_pull_request": 1,
        "slack.request_approval": 1,
        "slack.update_message": 1,
        "github.merge_pull_request": 1,
        "slack.post_message": 1,
        "codegen.create_agent_run_undo": 1,
        "github.create_pull_request_undo": 1,
        "linear.move_issue_undo": 1,
    }
    for action in (e for e in events if e.type.startswith(prefix)):
        assert action.correlation_id in ("ENG-1", "ENG-2")
        assert action.causation_id is not None
    webhooks = [e for e in events if e.source in ("github", "linear", "slack")]
    ours = {
        e.id
        for e in webhooks
        if e.actor in (BOT, "Contexten") or (e.data.get("event") or {}).get("bot_id")
    }
    marked = {e.data["event_id"] for e in events if e.type == ECHO_EVENT}
    assert len(ours) == 13
    assert marked == ours

    timeline = output.getvalue()
    assert "▶ Ada Lovelace labelled ENG-1 agent" in timeline
    assert "◀ merge_pull_request: merged" in timeline
    assert "↶ undo move_issue ENG-2" in timeline
    assert "echo, not delivered" in timeline

    # The API needs a token here too: the demo prints its session's token with the API URL,
    # and keeps it out of the store (it lives in the process only).
    assert len(result.api_token) >= 32
    assert f"Authorization: Bearer {result.api_token}' '{result.app_url}/api/v1/" in timeline
    assert result.app_url.startswith("http://127.0.0.1:")
    assert all(result.api_token not in repr(e.data) for e in events)
    assert not [e for e in events if e.type.startswith("contexten.token.")]


async def test_the_store_must_be_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'used.db'}"
    store = create_store(url)
    await store.open()
    await store.append("s", [Event(type="a.b")])
    await store.close()
    with pytest.raises(DemoError, match="already holds events"):
        await DemoSession(options(tmp_path, store_url=url), Console(file=io.StringIO())).run()


async def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        session = DemoSession(options(tmp_path, port=port), Console(file=io.StringIO()))
        with pytest.raises(DemoError, match="pick another with --port"):
            await session.run()


def test_contexten_demo_exits_when_done(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where its fresh store goes
    result = subprocess.run(
        [
            str(BIN / "contexten"),
            "demo",
            "--port",
            "0",
            "--exit-when-done",
            "--agent-seconds",
            "0.2",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "implement-issue:ENG-1: completed" in result.stdout
    assert "implement-issue:ENG-2: compensated" in result.stdout
    assert list(tmp_path.glob("contexten-demo-*/contexten.db"))
