"""Slack client contract: against the sandbox, and against recorded Slack responses."""

from __future__ import annotations

import pytest

from contexten.events import Event
from contexten.exceptions import PlatformNotFound
from contexten.integrations import slack
from contexten.integrations.client import ClientRegistry, use_clients
from contexten.integrations.slack import SlackClient
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox

from .conftest import replay, settings


@pytest.fixture
def sk(clients: ClientRegistry) -> SlackClient:
    return clients.get(SlackClient)


async def test_post_update_react_delete(sk: SlackClient, sandbox: Sandbox) -> None:
    posted = await sk.post_message("C0ENG", "Deploying")
    assert posted["ok"] is True
    assert posted["channel"] == "C0ENG"
    await sk.update_message("C0ENG", posted["ts"], text="Deployed")
    await sk.add_reaction("C0ENG", posted["ts"], "rocket")
    await sk.add_reaction("C0ENG", posted["ts"], "rocket")  # already_reacted counts as done
    message = sandbox.slack.messages["C0ENG"][posted["ts"]]
    assert message["text"] == "Deployed"
    assert message["reactions"][0]["count"] == 1
    await sk.delete_message("C0ENG", posted["ts"])
    await sk.delete_message("C0ENG", posted["ts"])  # gone already: fine
    assert sandbox.slack.messages["C0ENG"] == {}


async def test_ok_false_errors_carry_slacks_code(sk: SlackClient) -> None:
    with pytest.raises(PlatformNotFound) as raised:
        await sk.post_message("#nowhere", "hi")
    assert raised.value.code == "channel_not_found"


async def test_post_is_once_per_key_despite_a_lost_response(
    sk: SlackClient, sandbox: Sandbox
) -> None:
    sandbox.inject("lost_response", platform="slack", path="chat.postMessage")
    first = await sk.post_message("C0ENG", "Approve?", idempotency_key="wf-2:s3")
    again = await sk.post_message("C0ENG", "Approve?", idempotency_key="wf-2:s3")
    assert first["ts"] == again["ts"]
    assert len(sandbox.slack.messages["C0ENG"]) == 1


async def test_429_retry_after_is_per_method(
    sk: SlackClient, sandbox: Sandbox, clock: VirtualClock
) -> None:
    sandbox.inject("rate_limit", platform="slack", path="chat.postMessage", retry_after=30)
    start = clock.monotonic()
    await sk.post_message("C0ENG", "Eventually")
    assert clock.monotonic() - start >= 30
    assert sk.http.limiter.delay("chat.update") == 0


async def test_approval_round_trip(clients: ClientRegistry, sandbox: Sandbox) -> None:
    with use_clients(clients):
        posted = await slack.request_approval(
            "C0ENG", "Merge PR #3?", "wf-5", idempotency_key="wf-5:approve"
        )
        payload = sandbox.slack.press("C0ENG", posted["ts"], slack.APPROVE_ACTION_ID)
        event = Event(type="slack.block_actions", source="slack", data=payload)
        assert slack.approval_decision(event) == ("approved", "wf-5", "U0ADA")

        await slack.request_approval.undo(result=posted)
    message = sandbox.slack.messages["C0ENG"][posted["ts"]]
    assert "superseded" in message["text"]
    assert all(block["type"] != "actions" for block in message["blocks"])
    interaction = sandbox.outbox[-1]
    assert interaction.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert interaction.json()["actions"][0]["value"] == "wf-5"


# -- recorded Slack responses ----------------------------------------------------------------


async def test_recorded_post_message(recording_clock: VirtualClock) -> None:
    transport = replay("slack_post_message_ok")
    async with SlackClient(
        settings("https://slack.com/api"), transport=transport, clock=recording_clock
    ) as sk:
        posted = await sk.post_message("C123ABC456", "Here's a message for you")
    assert posted["ts"] == "1503435956.000247"
    request = transport.seen[0]  # type: ignore[attr-defined]
    assert str(request.url) == "https://slack.com/api/chat.postMessage"
    assert request.headers["authorization"] == "Bearer test-token"


async def test_recorded_error_and_throttle(recording_clock: VirtualClock) -> None:
    transport = replay("slack_too_many_requests", "slack_channel_not_found")
    async with SlackClient(
        settings("https://slack.com/api"), transport=transport, clock=recording_clock
    ) as sk:
        with pytest.raises(PlatformNotFound, match="channel_not_found"):
            await sk.post_message("C404", "hi")
    assert recording_clock.monotonic() >= 30
