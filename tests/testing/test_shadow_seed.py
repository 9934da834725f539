"""The shadow's sandbox seeding, platform by platform, seen through the real clients: what a
recorded webhook names exists as it showed it, and our own recorded objects keep their ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contexten.events import Event
from contexten.integrations import linear
from contexten.integrations.codegen import CodegenClient
from contexten.integrations.linear import LinearClient
from contexten.integrations.slack import SlackClient
from contexten.store.base import RecordedEvent
from contexten.testing._shadow_seed import ShadowSeeder
from contexten.testing.sandbox import Sandbox, SandboxConfig

TEAM = {"id": "team-real-1", "key": "OPS", "name": "Operations"}
TODO = {"id": "state-real-todo", "name": "Todo", "type": "unstarted", "color": "#fff"}
BUG = {"id": "label-real-bug", "name": "bug", "color": "#f00"}


def _rec(event: Event, position: int = 1) -> RecordedEvent:
    return RecordedEvent(position, "recorded", 1, datetime.now(UTC), event)


def _issue(**changes: Any) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "id": "issue-real-7",
        "identifier": "OPS-7",
        "number": 7,
        "title": "Disk full on db-2",
        "description": "",
        "priority": 2,
        "url": "https://linear.app/acme/issue/OPS-7",
        "createdAt": "2026-01-05T10:00:00Z",
        "updatedAt": "2026-01-05T10:00:00Z",
        "archivedAt": None,
        "stateId": TODO["id"],
        "teamId": TEAM["id"],
        "assigneeId": None,
        "creatorId": "user-real-ada",
        "labelIds": [],
        "state": TODO,
        "team": TEAM,
        "labels": [],
    }
    issue.update(changes)
    return issue


def _linear_hook(action: str, issue: dict[str, Any], **extra: Any) -> Event:
    data = {"action": action, "type": "Issue", "data": issue, **extra}
    return Event(type=f"linear.issue.{action}d", source="linear", data=data)


async def test_a_linear_issue_of_a_real_team_exists_and_follows_a_persons_changes() -> None:
    sandbox = Sandbox(SandboxConfig(webhook_url=None))
    seeder = ShadowSeeder(sandbox, [])
    seeder.seed(_linear_hook("create", _issue()))
    async with sandbox.clients() as clients:
        client = clients.get(LinearClient)
        found = await client.get_issue("OPS-7")
        assert (found["id"], found["state"]["name"], found["team"]["key"]) == (
            "issue-real-7",
            "Todo",
            "OPS",
        )
        await linear.move_issue("issue-real-7", state="In Progress", client=client)
        # A person adds a label: only what updatedFrom names changes, not the shadow's move.
        labelled = _issue(labelIds=[BUG["id"]], labels=[BUG])
        seeder.seed(_linear_hook("update", labelled, updatedFrom={"labelIds": []}))
        after = await client.get_issue("OPS-7")
        assert after["state"]["name"] == "In Progress"
        assert [n["name"] for n in after["labels"]["nodes"]] == ["bug"]
        todo = [s["id"] for s in sandbox.linear.states.values() if s["name"] == "Todo"]
        assert TODO["id"] in todo
        assert len([s for s in todo if sandbox.linear.states[s]["team"] == TEAM["id"]]) == 1
        created = sandbox.linear.create_issue("Next one", team_key="OPS")
        assert created["identifier"] == "OPS-8", "the team numbers on after the seeded issue"


async def test_a_slack_button_press_makes_its_message_exist_in_the_real_channel() -> None:
    sandbox = Sandbox(SandboxConfig(webhook_url=None))
    message = {"type": "message", "ts": "1700000000.000100", "text": "Merge it?", "user": "U0BOT"}
    press = Event(
        type="slack.block_actions",
        source="slack",
        data={
            "type": "block_actions",
            "channel": {"id": "C04REALENG", "name": "eng"},
            "container": {"channel_id": "C04REALENG", "message_ts": message["ts"]},
            "message": message,
        },
    )
    ShadowSeeder(sandbox, []).seed(press)
    async with sandbox.clients() as clients:
        client = clients.get(SlackClient)
        history = await client.read("conversations.history", channel="C04REALENG")
        assert [m["ts"] for m in history["messages"]] == [message["ts"]]
        await client.add_reaction("C04REALENG", message["ts"], "eyes")
        assert sandbox.slack.channel_id("#eng") == "C04REALENG", "the real channel, by name"


async def test_recorded_ids_are_reserved_and_agent_runs_follow_the_recorded_events() -> None:
    sandbox = Sandbox(SandboxConfig(webhook_url=None, agent_run_start_after=10.0**9))
    key = "implement-issue:OPS-7:3:create_agent_run"
    action = Event(
        type="contexten.action.codegen.create_agent_run",
        source="contexten",
        data={
            "platform": "codegen",
            "action": "create_agent_run",
            "idempotency_key": key,
            "result": {"id": 424242, "status": "queued"},
        },
    )
    posted = Event(
        type="contexten.action.slack.post_message",
        source="contexten",
        data={
            "platform": "slack",
            "action": "post_message",
            "idempotency_key": "wf:5:post_message",
            "result": {"ts": "1700000000.000777", "channel": "C0ENG"},
        },
    )
    echo = Event(type="contexten.echo.detected", source="slack", data={"event_id": "ev-echo"})
    seeder = ShadowSeeder(sandbox, [_rec(action), _rec(posted), _rec(echo)])
    assert seeder.reserved == 2
    assert seeder.recorded_echo(Event(type="slack.message", source="slack", id="ev-echo"))
    async with sandbox.clients() as clients:
        codegen = clients.get(CodegenClient)
        other = await codegen.create_agent_run("Unrelated", idempotency_key="someone-else")
        assert other["id"] != 424242, "a reserved id is never handed to another run"
        run = await codegen.create_agent_run("OPS-7: fix it", idempotency_key=key)
        assert run["id"] == 424242
        done = {"id": 424242, "status": "completed", "result": "Fixed.", "summary": "Done."}
        seeder.seed(Event(type="codegen.agent_run.completed", source="codegen", data=done))
        assert (await codegen.get_agent_run(424242))["status"] == "completed"
        assert (await codegen.get_agent_run(other["id"]))["status"] == "queued", "no progress"
        slack = clients.get(SlackClient)
        message = await slack.post_message("#eng", "Done", idempotency_key="wf:5:post_message")
        assert message["ts"] == "1700000000.000777"


async def test_a_real_team_with_the_sandbox_teams_key_takes_its_place() -> None:
    sandbox = Sandbox(SandboxConfig(webhook_url=None))
    default_team = next(t for t in sandbox.linear.teams.values() if t["key"] == "ENG")
    real_team = {"id": "team-real-eng", "key": "ENG", "name": "Engineering"}
    real_todo = {"id": "state-real-eng-todo", "name": "Todo", "type": "unstarted"}
    issue = _issue(
        id="issue-real-eng-3",
        identifier="ENG-3",
        number=3,
        teamId=real_team["id"],
        team=real_team,
        stateId=real_todo["id"],
        state=real_todo,
    )
    ShadowSeeder(sandbox, []).seed(_linear_hook("create", issue))
    assert [t["id"] for t in sandbox.linear.teams.values() if t["key"] == "ENG"] == [
        "team-real-eng"
    ]
    assert default_team["id"] not in sandbox.linear.teams
    async with sandbox.clients() as clients:
        client = clients.get(LinearClient)
        await linear.move_issue("ENG-3", state="In Review", client=client)
        moved = await client.get_issue("ENG-3")
        assert (moved["state"]["name"], moved["team"]["id"]) == ("In Review", "team-real-eng")
    assert sandbox.linear.create_issue("Next", team_key="ENG")["identifier"] == "ENG-4"
