"""Golden histories of the dev-team example's ``implement-issue`` workflow.

``test_devteam_replay.py`` replays them against ``examples/devteam.py``, so a change to that
workflow which would break an instance already in flight (a step added, removed, renamed or
moved, a wait reordered) fails the tests. The histories are real: they are exported from a
run of ``contexten demo``'s scenario against the sandbox. Record them again after a
deliberate change (a new workflow version), and review the diff::

    .venv/bin/python tests/workflows/golden_devteam.py
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from contexten.cli.demo import DemoOptions, DemoSession
from contexten.store import create_store
from contexten.testing import export_history, save_history

REPO_ROOT = Path(__file__).resolve().parents[2]
HISTORIES = Path(__file__).with_name("histories") / "devteam"
WAITING_FOR_APPROVAL = "implement-issue-ENG-1-awaiting-approval"


def awaiting_approval(history: dict[str, Any]) -> dict[str, Any]:
    """The prefix of a completed history up to its wait for the Slack approval: what an
    instance in flight at that moment has recorded (histories are append-only)."""
    events = history["events"]
    cut = next(
        i
        for i, item in enumerate(events)
        if item["event"]["type"] == "contexten.workflow.wait_started"
        and item["event"]["data"]["pattern"] == "slack.block_actions"
    )
    return {**history, "events": events[: cut + 1]}


def scrubbed(history: dict[str, Any]) -> dict[str, Any]:
    """``history`` without the recording machine's engine owner ids (host/pid)."""
    for item in history["events"]:
        data = item["event"].get("data") or {}
        if "owner" in data and isinstance(data["owner"], str):
            data["owner"] = "golden-recorder"
    return history


async def record() -> None:
    """Play the demo's scenario and save each instance's history."""
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'golden.db'}"
        options = DemoOptions(
            port=0, store_url=url, cwd=REPO_ROOT, agent_seconds=0.2, exit_when_done=True
        )
        await DemoSession(options, Console(file=io.StringIO())).run()
        store = create_store(url)
        await store.open()
        try:
            HISTORIES.mkdir(parents=True, exist_ok=True)
            for key in ("ENG-1", "ENG-2"):
                history = scrubbed(await export_history(store, f"implement-issue:{key}"))
                save_history(history, HISTORIES / f"implement-issue-{key}.json")
                if key == "ENG-1":
                    save_history(
                        awaiting_approval(history), HISTORIES / f"{WAITING_FOR_APPROVAL}.json"
                    )
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(record())
