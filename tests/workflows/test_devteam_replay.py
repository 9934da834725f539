"""The dev-team example's golden histories replay against its current code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from contexten.events import Event
from contexten.exceptions import NondeterminismError
from contexten.ingress.loader import load_app
from contexten.testing import Replayer, load_history

from . import golden_devteam

GOLDEN = sorted(golden_devteam.HISTORIES.glob("*.json"))


@pytest.fixture(scope="module")
def replayer() -> Iterator[Replayer]:
    app = load_app("examples/devteam.py", cwd=golden_devteam.REPO_ROOT)
    yield Replayer(app.workflows)
    sys.modules.pop("devteam", None)  # other tests load other files named devteam.py


def test_the_golden_histories_are_there() -> None:
    names = {p.stem for p in GOLDEN}
    assert names == {
        "implement-issue-ENG-1",
        "implement-issue-ENG-2",
        golden_devteam.WAITING_FOR_APPROVAL,
    }


async def test_the_merged_issue_replays_to_its_result(replayer: Replayer) -> None:
    path = golden_devteam.HISTORIES / "implement-issue-ENG-1.json"
    outcome = await replayer.replay_file(path)
    assert outcome.returned
    assert outcome.result == load_history(path)["events"][-1]["event"]["data"]["result"]
    assert outcome.result["merged"] is True


async def test_the_failed_agent_run_replays_to_its_error(replayer: Replayer) -> None:
    outcome = await replayer.replay_file(golden_devteam.HISTORIES / "implement-issue-ENG-2.json")
    assert not outcome.returned
    assert outcome.error is not None
    assert type(outcome.error).__name__ == "AgentRunFailed"


async def test_an_instance_waiting_for_approval_replays_in_flight(replayer: Replayer) -> None:
    path = golden_devteam.HISTORIES / f"{golden_devteam.WAITING_FOR_APPROVAL}.json"
    outcome = await replayer.replay_file(path)
    assert outcome.in_flight


async def _approval_before_review(wf: Any, event: Event) -> Any:
    """The workflow with two steps swapped: in-flight instances must not take it."""
    from contexten.integrations import github, linear

    await wf.step(github.create_pull_request, "acme/api", title="t", head="h", base="main")
    await wf.step(linear.move_issue, event.data["data"]["id"], state="In Progress")


async def test_reordered_steps_are_caught(replayer: Replayer) -> None:
    with pytest.raises(NondeterminismError):
        await Replayer({"implement-issue": _approval_before_review}).replay_file(
            golden_devteam.HISTORIES / "implement-issue-ENG-1.json"
        )
