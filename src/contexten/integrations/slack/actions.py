"""Slack actions: mutating calls with their compensations, usable as workflow steps.

Each action takes ``client=`` (default: the registry's Slack client) and
``idempotency_key=``, and returns Slack's response. A post cannot be unsent in a way people
did not see, so its compensation *marks it superseded* (strikes it through, drops its buttons)
rather than deleting it; ``delete_message`` exists for when deleting is what you want.

Approvals: :func:`request_approval` posts an approve/reject message; the press comes back as a
``slack.block_actions`` event, which :func:`approval_decision` reads.
"""

from __future__ import annotations

from typing import Any, Literal

from contexten.events import Event
from contexten.integrations.action import action
from contexten.integrations.client import current_clients
from contexten.integrations.slack.client import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    SlackClient,
    approval_blocks,
)

__all__ = [
    "add_reaction",
    "approval_decision",
    "delete_message",
    "mark_superseded",
    "post_message",
    "request_approval",
    "update_message",
]

JSON = dict[str, Any]


def _client(client: SlackClient | None) -> SlackClient:
    return client if client is not None else current_clients().get(SlackClient)


def _fingerprint(result: Any) -> list[str]:
    if isinstance(result, dict) and result.get("ts") and result.get("channel"):
        return [f"slack:{result['channel']}:{result['ts']}"]
    return []


def _posted(result: Any) -> tuple[str, str]:
    if not isinstance(result, dict) or not result.get("ts"):
        raise ValueError("this compensation needs the step's result (a posted message)")
    return str(result["channel"]), str(result["ts"])


async def mark_superseded(
    channel: str, ts: str, *, text: str = "(superseded)", client: SlackClient | None = None
) -> JSON:
    """Strike a message through and drop its buttons (how Slack posts are undone)."""
    slack = _client(client)
    current = await slack.get_message(channel, ts)
    original = str((current or {}).get("text") or "")
    struck = f"~{original}~ {text}".strip() if original else text
    blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": struck}]}]
    return await slack.update_message(channel, ts, text=struck, blocks=blocks)


@action(platform="slack", fingerprint=_fingerprint)
async def post_message(
    channel: str,
    text: str,
    *,
    blocks: list[JSON] | None = None,
    thread_ts: str | None = None,
    idempotency_key: str | None = None,
    client: SlackClient | None = None,
    **extra: Any,
) -> JSON:
    """``chat.postMessage``. Undo: mark the post superseded."""
    return await _client(client).post_message(
        channel,
        text,
        blocks=blocks,
        thread_ts=thread_ts,
        idempotency_key=idempotency_key,
        **extra,
    )


@post_message.compensation
async def _supersede_post(
    *args: Any, result: Any = None, client: SlackClient | None = None, **_: Any
) -> JSON:
    channel, ts = _posted(result)
    return await mark_superseded(channel, ts, client=client)


@action(platform="slack", fingerprint=_fingerprint)
async def request_approval(
    channel: str,
    text: str,
    request_id: str,
    *,
    thread_ts: str | None = None,
    idempotency_key: str | None = None,
    client: SlackClient | None = None,
) -> JSON:
    """Post an approve/reject message for ``request_id``. Undo: mark it superseded."""
    return await _client(client).post_message(
        channel,
        text,
        blocks=approval_blocks(text, request_id),
        thread_ts=thread_ts,
        metadata={"event_type": "contexten_approval", "event_payload": {"request_id": request_id}},
        idempotency_key=idempotency_key,
    )


request_approval.compensation(_supersede_post)


def approval_decision(event: Event) -> tuple[Literal["approved", "rejected"], str, str] | None:
    """Read a ``slack.block_actions`` event: ``(decision, request_id, user_id)`` for a press of
    an approval button, else ``None``."""
    payload = event.data
    for pressed in payload.get("actions") or []:
        action_id = pressed.get("action_id")
        if action_id in (APPROVE_ACTION_ID, REJECT_ACTION_ID):
            decision: Literal["approved", "rejected"] = (
                "approved" if action_id == APPROVE_ACTION_ID else "rejected"
            )
            user = str((payload.get("user") or {}).get("id") or "")
            return decision, str(pressed.get("value") or ""), user
    return None


@action(platform="slack", fingerprint=_fingerprint)
async def update_message(
    channel: str,
    ts: str,
    *,
    text: str | None = None,
    blocks: list[JSON] | None = None,
    idempotency_key: str | None = None,
    client: SlackClient | None = None,
) -> JSON:
    """``chat.update``. Undo: put the previous text and blocks back."""
    slack = _client(client)
    before = await slack.get_message(channel, ts) or {}
    result = await slack.update_message(channel, ts, text=text, blocks=blocks)
    return {
        **result,
        "contexten_previous": {"text": before.get("text", ""), "blocks": before.get("blocks")},
    }


@update_message.compensation
async def _restore_message(
    channel: str,
    ts: str,
    *args: Any,
    result: Any = None,
    client: SlackClient | None = None,
    **_: Any,
) -> JSON:
    if not isinstance(result, dict) or "contexten_previous" not in result:
        raise ValueError("this compensation needs the step's result")
    previous = result["contexten_previous"]
    return await _client(client).update_message(
        channel, ts, text=previous.get("text") or " ", blocks=previous.get("blocks") or []
    )


@action(platform="slack", fingerprint=_fingerprint)
async def delete_message(
    channel: str,
    ts: str,
    *,
    idempotency_key: str | None = None,
    client: SlackClient | None = None,
) -> JSON:
    """``chat.delete`` (a message already gone is fine); returns the message as it was.

    Undo: post its text again (Slack cannot restore a deleted message).
    """
    slack = _client(client)
    before = await slack.get_message(channel, ts) or {}
    await slack.delete_message(channel, ts)
    return {"ok": True, "channel": channel, "ts": ts, "message": before}


@delete_message.compensation
async def _repost(
    channel: str,
    ts: str,
    *args: Any,
    result: Any = None,
    idempotency_key: str | None = None,
    client: SlackClient | None = None,
    **_: Any,
) -> JSON | None:
    message = (result or {}).get("message") or {}
    if not message.get("text"):
        return None
    return await _client(client).post_message(
        channel, message["text"], blocks=message.get("blocks"), idempotency_key=idempotency_key
    )


@action(platform="slack")
async def add_reaction(
    channel: str,
    ts: str,
    name: str,
    *,
    idempotency_key: str | None = None,
    client: SlackClient | None = None,
) -> JSON:
    """``reactions.add`` (already there counts as done). Undo: remove the reaction."""
    return await _client(client).add_reaction(channel, ts, name)


@add_reaction.compensation
async def _remove_reaction(
    channel: str, ts: str, name: str, *args: Any, client: SlackClient | None = None, **_: Any
) -> JSON:
    return await _client(client).remove_reaction(channel, ts, name)
