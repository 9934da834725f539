"""State machines: decisions, instances per key, rejected events, actions, diagrams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contexten.events import Event
from contexten.exceptions import ConfigurationError, InvalidPattern, NonRetryableError
from contexten.workflows import (
    StateMachine,
    Transition,
    WorkflowEngine,
    WorkflowStatus,
    current_step,
)

from .conftest import HANG_GUARD, Env


def _pr(action: str, number: int = 1, **data: Any) -> Event:
    return Event(
        type=f"github.pull_request.{action}",
        subject=f"pr-{number}",
        data={"number": number, **data},
    )


def pr_lifecycle(action: Any = None) -> StateMachine:
    return StateMachine(
        "pr-lifecycle",
        initial="open",
        key=lambda e: e.subject,
        transitions=[
            Transition("open", on="github.pull_request.review_requested", to="in_review"),
            Transition("in_review", on="github.pull_request.review_submitted", to="open"),
            Transition(
                ["open", "in_review"],
                on="github.pull_request.closed",
                to="merged",
                when=lambda e: bool(e.data.get("merged")),
                action=action,
            ),
            Transition(["open", "in_review"], on="github.pull_request.closed", to="closed"),
        ],
    )


def test_decide_takes_the_first_transition_whose_source_pattern_and_guard_hold() -> None:
    sm = pr_lifecycle()
    assert sm.decide("open", _pr("review_requested")).transition is not None
    assert sm.decide("open", _pr("closed", merged=True)).transition.to == "merged"  # type: ignore[union-attr]
    assert sm.decide("in_review", _pr("closed", merged=False)).transition.to == "closed"  # type: ignore[union-attr]
    rejected = sm.decide("in_review", _pr("review_requested"))
    assert not rejected.accepted
    assert "no transition from 'in_review'" in (rejected.reason or "")
    assert not sm.decide("merged", _pr("closed", merged=True)).accepted
    assert sm.terminal_states == {"merged", "closed"}
    assert sm.states == {"open", "in_review", "merged", "closed"}
    assert sm.listens_to("github.pull_request.closed")
    assert not sm.listens_to("github.push")


def test_a_raising_guard_is_a_false_guard() -> None:
    sm = StateMachine(
        "g",
        initial="a",
        transitions=[Transition("a", on="x.y", to="b", when=lambda e: e.data["missing"])],
    )
    decision = sm.decide("a", Event(type="x.y"))
    assert not decision.accepted
    assert "KeyError" in (decision.reason or "")


def test_bad_machines_are_refused_when_declared() -> None:
    with pytest.raises(ConfigurationError):
        StateMachine("empty", initial="a", transitions=[])
    with pytest.raises(ConfigurationError, match="initial"):
        StateMachine("unreachable", initial="a", transitions=[Transition("b", on="x.y", to="c")])
    with pytest.raises(InvalidPattern):
        StateMachine("bad", initial="a", transitions=[Transition("a", on="x..y", to="b")])


def test_to_mermaid_renders_states_transitions_and_the_current_state() -> None:
    text = pr_lifecycle().to_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    assert "[*] --> open" in text
    assert "open --> in_review: github.pull_request.review_requested" in text
    assert "in_review --> merged: github.pull_request.closed [guarded]" in text
    assert "merged --> [*]" in text
    assert "classDef" not in text
    highlighted = pr_lifecycle().to_mermaid(current="in_review")
    assert "class in_review current" in highlighted
    odd = StateMachine(
        "odd", initial="to do", transitions=[Transition("to do", on="a.b", to="done")]
    )
    assert 'state "to do" as s1' in odd.to_mermaid()


async def _until(engine: WorkflowEngine, wid: str, check: Any) -> Any:
    async with asyncio.timeout(HANG_GUARD):
        while True:
            try:
                info = await engine.get_workflow(wid)
            except Exception:
                info = None
            if info is not None and check(info):
                return info
            await asyncio.sleep(0.002)


async def test_instances_are_created_per_key_and_follow_their_events(env: Env) -> None:
    actions: list[tuple[int, str]] = []

    async def close_linked_issue(event: Event) -> dict[str, Any]:
        actions.append((event.data["number"], current_step().idempotency_key))
        return {"closed": event.data["number"]}

    def setup(engine: WorkflowEngine) -> None:
        engine.add(pr_lifecycle(action=close_linked_issue))

    engine = await env.engine(setup)
    store = engine.store
    await store.append("gh", [_pr("review_submitted", 1)])  # not accepted from "open": no instance
    await store.append("gh", [_pr("review_requested", 1)])
    await store.append("gh", [_pr("review_requested", 2)])
    await store.append("gh", [_pr("review_requested", 1)])  # rejected: already in review
    await store.append("gh", [_pr("closed", 1, merged=True)])
    await store.append("gh", [_pr("closed", 2, merged=False)])
    one = await _until(engine, "pr-lifecycle:pr-1", lambda i: i.status is WorkflowStatus.COMPLETED)
    two = await _until(engine, "pr-lifecycle:pr-2", lambda i: i.status is WorkflowStatus.COMPLETED)
    assert one.state == "merged"
    assert two.state == "closed"
    kinds = [h.kind for h in one.history]
    assert kinds == [
        "started",
        "transitioned",
        "transition_rejected",
        "transitioned",
        "step_completed",
        "completed",
    ]
    assert one.history[2].data["reason"] == (
        "no transition from 'in_review' on 'github.pull_request.review_requested'"
    )
    assert one.history[4].data["result"] == {"closed": 1}
    assert len(actions) == 1
    assert actions[0][0] == 1
    assert actions[0][1].startswith("pr-lifecycle:pr-1:3:")

    engine = await env.restart(engine, setup)  # re-reading the log changes nothing
    await engine.store.append("gh", [_pr("review_requested", 3)])
    await _until(engine, "pr-lifecycle:pr-3", lambda i: i.state == "in_review")
    again = await engine.get_workflow("pr-lifecycle:pr-1")
    assert [h.kind for h in again.history] == kinds
    assert len(actions) == 1
    listed = {i.workflow_id: i.status for i in await engine.list_workflows()}
    assert listed["pr-lifecycle:pr-3"] is WorkflowStatus.WAITING


async def test_a_failing_action_fails_the_instance_and_a_redrive_retries_it(env: Env) -> None:
    broken = [True]

    async def flaky_action(event: Event) -> str:
        if broken[0]:
            raise NonRetryableError("linear is down")
        return "ok"

    def setup(engine: WorkflowEngine) -> None:
        engine.add(pr_lifecycle(action=flaky_action))

    engine = await env.engine(setup)
    await engine.store.append("gh", [_pr("closed", 7, merged=True)])
    wid = "pr-lifecycle:pr-7"
    failed = await _until(engine, wid, lambda i: i.status is WorkflowStatus.FAILED)
    assert failed.error is not None
    assert failed.error["message"] == "linear is down"
    broken[0] = False
    await engine.retry_workflow(wid)
    done = await _until(engine, wid, lambda i: i.status is WorkflowStatus.COMPLETED)
    assert done.state == "merged"


async def test_a_state_machine_instance_can_be_cancelled(memory_env: Env) -> None:
    engine = await memory_env.engine(lambda e: e.add(pr_lifecycle()) and None)
    await engine.store.append("gh", [_pr("review_requested", 9)])
    wid = "pr-lifecycle:pr-9"
    await _until(engine, wid, lambda i: i.state == "in_review")
    assert await engine.cancel_workflow(wid) is True
    info = await engine.get_workflow(wid)
    assert info.status is WorkflowStatus.CANCELLED
    await engine.store.append("gh", [_pr("closed", 9, merged=True)])
    await asyncio.sleep(0.05)
    assert (await engine.get_workflow(wid)).status is WorkflowStatus.CANCELLED
    assert await engine.cancel_workflow(wid) is False


async def test_a_machine_whose_code_lost_a_recorded_action_is_blocked_then_redriven(
    env: Env,
) -> None:
    started = asyncio.Event()

    async def hangs(event: Event) -> str:
        started.set()
        await asyncio.Event().wait()  # the process "dies" while the action runs
        return "never"

    async def fixed(event: Event) -> str:
        return "closed the issue"

    engine = await env.engine(lambda e: e.add(pr_lifecycle(action=hangs)) and None)
    await engine.store.append("gh", [_pr("closed", 5, merged=True)])
    wid = "pr-lifecycle:pr-5"
    async with asyncio.timeout(HANG_GUARD):
        await started.wait()

    # The deploy dropped the merged transition's action under the in-flight instance.
    engine = await env.restart(engine, lambda e: e.add(pr_lifecycle(action=None)) and None)
    blocked = await _until(engine, wid, lambda i: i.status is WorkflowStatus.BLOCKED)
    assert blocked.blocked_reason == "nondeterminism"
    assert blocked.error is not None
    assert "has no action in the current code" in blocked.error["message"]
    assert engine.stats.blocked["pr-lifecycle"] == 1
    assert "failed" not in [h.kind for h in blocked.history]

    # The fix is deployed: the instance stays blocked until an operator redrives it.
    engine = await env.restart(engine, lambda e: e.add(pr_lifecycle(action=fixed)) and None)
    await asyncio.sleep(0.05)
    assert (await engine.get_workflow(wid)).status is WorkflowStatus.BLOCKED
    await engine.retry_workflow(wid)
    done = await _until(engine, wid, lambda i: i.status is WorkflowStatus.COMPLETED)
    assert done.state == "merged"
    kinds = [h.kind for h in done.history]
    assert kinds[kinds.index("blocked") :] == ["blocked", "redriven", "step_completed", "completed"]
