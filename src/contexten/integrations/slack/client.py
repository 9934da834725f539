"""Slack Web API client: messages, updates, deletes, reactions, approval messages.

Slack answers HTTP 200 with ``{"ok": false, "error": "channel_not_found"}`` for most failures;
the adapter turns those codes into Contexten errors (not found, invalid request, rate limited,
unavailable). Rate limits are per method (each method belongs to a tier): a 429 carries
``Retry-After``, and the limiter blocks that method's bucket for that long.

Posting is idempotent by check-before-create: the key rides in the message's ``metadata``
(``event_payload.contexten_idempotency_key``) and a post first looks for it in the channel's
(or thread's) recent history. Pass channel *ids* for that lookup to work (names cannot be
read back by ``conversations.history``); a failed lookup never blocks the post.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx

from contexten.exceptions import (
    PlatformError,
    PlatformNotFound,
    PlatformRequestError,
    PlatformUnavailable,
    RateLimited,
)
from contexten.integrations.client import PlatformClient
from contexten.integrations.errors import error_for_status
from contexten.integrations.http import PlatformAdapter, parse_retry_after
from contexten.resilience.rate_limit import RateLimitUpdate

__all__ = [
    "APPROVE_ACTION_ID",
    "JSON_METHODS",
    "REJECT_ACTION_ID",
    "SlackAdapter",
    "SlackClient",
    "approval_blocks",
    "form_fields",
]

JSON = dict[str, Any]

APPROVE_ACTION_ID = "contexten_approve"
REJECT_ACTION_ID = "contexten_reject"
METADATA_EVENT_TYPE = "contexten_action"
_LOOKUP_LIMIT = 100

JSON_METHODS = frozenset(
    {
        "chat.postEphemeral",
        "chat.postMessage",
        "chat.scheduleMessage",
        "chat.unfurl",
        "chat.update",
        "views.open",
        "views.publish",
        "views.push",
        "views.update",
    }
)
"""The Web API methods this client sends as JSON: those Slack takes JSON for (Slack's SDK sends
exactly these as JSON; the conformance tests check the set against its method table)."""


def form_fields(arguments: dict[str, Any]) -> dict[str, str]:
    """Arguments as Slack's form encoding carries them (lists and objects as JSON strings)."""
    out: dict[str, str] = {}
    for key, value in arguments.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, dict | list):
            out[key] = json.dumps(value, separators=(",", ":"))
        else:
            out[key] = str(value)
    return out


_NOT_FOUND = frozenset(
    {
        "channel_not_found",
        "message_not_found",
        "thread_not_found",
        "user_not_found",
        "no_item_specified",
        "not_in_channel",
        "no_such_subteam",
    }
)
_TRANSIENT = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)


class SlackAdapter(PlatformAdapter):
    """Slack's auth, per-method rate limits and ``ok: false`` errors."""

    platform = "slack"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def bucket(self, method: str, url: httpx.URL) -> str:
        return url.path.rsplit("/", 1)[-1] or "default"

    def rate_limit_updates(self, response: httpx.Response) -> list[RateLimitUpdate]:
        if response.status_code == 429 or self._code(response) == "ratelimited":
            wait = parse_retry_after(response.headers.get("retry-after"))
            bucket = self.bucket(response.request.method, response.request.url)
            return [RateLimitUpdate(bucket=bucket, retry_after=wait if wait is not None else 1.0)]
        return []

    @staticmethod
    def _body(response: httpx.Response) -> JSON | None:
        try:
            body = response.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _code(self, response: httpx.Response) -> str | None:
        body = self._body(response)
        if body is None or body.get("ok", True):
            return None
        return str(body.get("error") or "unknown_error")

    def error_for(self, response: httpx.Response) -> PlatformError | None:
        status = response.status_code
        wait = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            return RateLimited(
                "ratelimited",
                retry_after=wait or 1.0,
                platform="slack",
                status=429,
                code="ratelimited",
            )
        if status >= 400:
            return error_for_status(status, self.error_message(response), platform="slack")
        code = self._code(response)
        if code is None:
            return None
        if code == "ratelimited":
            return RateLimited(
                code, retry_after=wait or 1.0, platform="slack", status=status, code=code
            )
        if code in _TRANSIENT:
            error: PlatformError = PlatformUnavailable(
                code, platform="slack", status=status, code=code
            )
            error.maybe_applied = True
            return error
        if code in _NOT_FOUND:
            return PlatformNotFound(code, platform="slack", status=status, code=code)
        return PlatformRequestError(code, platform="slack", status=status, code=code)


def approval_blocks(
    text: str, request_id: str, *, approve: str = "Approve", reject: str = "Reject"
) -> list[JSON]:
    """Block Kit for an approve/reject message; presses come back as
    ``slack.block_actions`` events with ``action_id`` :data:`APPROVE_ACTION_ID` or
    :data:`REJECT_ACTION_ID` and ``value`` ``request_id``."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": "contexten_approval",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": approve},
                    "style": "primary",
                    "action_id": APPROVE_ACTION_ID,
                    "value": request_id,
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": reject},
                    "style": "danger",
                    "action_id": REJECT_ACTION_ID,
                    "value": request_id,
                },
            ],
        },
    ]


class SlackClient(PlatformClient):
    """The Slack Web API for one bot token (``CONTEXTEN_SLACK_BOT_TOKEN``).

    Methods return Slack's response objects (with ``ok: true``).
    """

    platform: ClassVar[str] = "slack"
    token_env: ClassVar[str] = "CONTEXTEN_SLACK_BOT_TOKEN"
    default_base_url: ClassVar[str] = "https://slack.com/api"
    sandbox_path: ClassVar[str] = "/slack/api"
    extra_hosts: ClassVar[tuple[str, ...]] = ("hooks.slack.com",)

    def _adapter(self) -> PlatformAdapter:
        return SlackAdapter()

    async def call(self, method: str, *, replay_safe: bool = True, **arguments: Any) -> JSON:
        """Call any Web API method (``None`` arguments are dropped).

        Methods that take JSON (:data:`JSON_METHODS`) get a JSON body; every other one gets
        Slack's primary encoding, a form, where lists and objects are JSON strings and
        booleans ``true``/``false``, as Slack's own SDK sends them.
        """
        payload = {k: v for k, v in arguments.items() if v is not None}
        if method in JSON_METHODS:
            response = await self.http.request(
                "POST",
                method,
                json=payload,
                headers={"Content-Type": "application/json; charset=utf-8"},
                replay_safe=replay_safe,
            )
        else:
            response = await self.http.request(
                "POST", method, data=form_fields(payload), replay_safe=replay_safe
            )
        body: JSON = response.json()
        return body

    async def read(self, method: str, **params: Any) -> JSON:
        """Call a read method with query parameters."""
        query = {k: v for k, v in params.items() if v is not None}
        response = await self.http.request("GET", method, params=query)
        body: JSON = response.json()
        return body

    async def post_message(
        self,
        channel: str,
        text: str,
        *,
        blocks: list[JSON] | None = None,
        thread_ts: str | None = None,
        metadata: JSON | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> JSON:
        """``chat.postMessage`` (once per idempotency key)."""
        payload_meta = dict((metadata or {}).get("event_payload") or {})
        event_type = (metadata or {}).get("event_type") or METADATA_EVENT_TYPE
        if idempotency_key is not None:
            payload_meta["contexten_idempotency_key"] = idempotency_key
        meta = {"event_type": event_type, "event_payload": payload_meta} if payload_meta else None

        async def lookup() -> JSON | None:
            return await self._find_posted(channel, thread_ts, idempotency_key)

        async def create() -> JSON:
            return await self.call(
                "chat.postMessage",
                replay_safe=False,
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                metadata=meta,
                **extra,
            )

        return await self.create_once(f"slack:post:{channel}", idempotency_key, lookup, create)

    async def _find_posted(
        self, channel: str, thread_ts: str | None, key: str | None
    ) -> JSON | None:
        try:
            if thread_ts:
                page = await self.read(
                    "conversations.replies",
                    channel=channel,
                    ts=thread_ts,
                    include_all_metadata="true",
                    limit=_LOOKUP_LIMIT,
                )
            else:
                page = await self.read(
                    "conversations.history",
                    channel=channel,
                    include_all_metadata="true",
                    limit=_LOOKUP_LIMIT,
                )
        except PlatformRequestError:
            return None  # e.g. a channel name, or missing history scope: post without lookup
        for message in page.get("messages", []):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("contexten_idempotency_key") == key:
                return {
                    "ok": True,
                    "channel": page.get("channel", channel),
                    "ts": message["ts"],
                    "message": message,
                }
        return None

    async def update_message(
        self,
        channel: str,
        ts: str,
        *,
        text: str | None = None,
        blocks: list[JSON] | None = None,
        **extra: Any,
    ) -> JSON:
        """``chat.update``."""
        return await self.call(
            "chat.update", channel=channel, ts=ts, text=text, blocks=blocks, **extra
        )

    async def delete_message(self, channel: str, ts: str, *, missing_ok: bool = True) -> JSON:
        """``chat.delete``; a message already gone is fine unless ``missing_ok`` is false."""
        try:
            return await self.call("chat.delete", channel=channel, ts=ts)
        except PlatformNotFound:
            if not missing_ok:
                raise
            return {"ok": True, "channel": channel, "ts": ts}

    async def get_message(self, channel: str, ts: str) -> JSON | None:
        """One message by its timestamp, or ``None``."""
        page = await self.read(
            "conversations.history",
            channel=channel,
            latest=ts,
            oldest=ts,
            inclusive="true",
            limit=1,
            include_all_metadata="true",
        )
        messages = page.get("messages", [])
        return dict(messages[0]) if messages else None

    async def add_reaction(self, channel: str, ts: str, name: str) -> JSON:
        """``reactions.add``; a reaction already there counts as done."""
        try:
            return await self.call("reactions.add", channel=channel, timestamp=ts, name=name)
        except PlatformRequestError as error:
            if error.code == "already_reacted":
                return {"ok": True}
            raise

    async def post_ephemeral(self, channel: str, user: str, text: str) -> JSON:
        """``chat.postEphemeral``: a message only ``user`` sees, in ``channel``."""
        return await self.call("chat.postEphemeral", channel=channel, user=user, text=text)

    async def usergroup_members(self, usergroup: str) -> list[str]:
        """The user ids in a Slack user group (``usergroups.users.list``)."""
        body = await self.read("usergroups.users.list", usergroup=usergroup)
        return [str(u) for u in body.get("users") or []]

    async def remove_reaction(self, channel: str, ts: str, name: str) -> JSON:
        """``reactions.remove``; a reaction already gone counts as done."""
        try:
            return await self.call("reactions.remove", channel=channel, timestamp=ts, name=name)
        except PlatformRequestError as error:
            if error.code == "no_reaction":
                return {"ok": True}
            raise
