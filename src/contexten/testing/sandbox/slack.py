"""The sandbox's Slack Web API: ``chat.postMessage``/``update``/``delete``, ``reactions.*``,
``conversations.history``/``replies`` (with metadata); Slack's ``ok: false`` errors; Events
API ``message`` deliveries for bot posts; button presses as interactivity payloads.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contexten.testing.sandbox.core import Core, Emulator, bearer, json_response
from contexten.testing.sandbox.faults import Fault
from contexten.testing.specs import slack_methods

_JSON_ARGUMENTS = frozenset({"blocks", "attachments", "metadata", "unfurls", "view"})


def _decoded(key: str, value: Any) -> Any:
    """A form field as Slack reads it: ``blocks``, ``metadata``... carry JSON strings."""
    if key in _JSON_ARGUMENTS and isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


__all__ = ["SlackEmulator"]

JSON = dict[str, Any]


class SlackEmulator(Emulator):
    """Slack, in memory, with channels ``#general`` (C0GENERAL) and ``#eng`` (C0ENG)."""

    platform = "slack"

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.reset()

    def reset(self) -> None:
        self.channels: dict[str, str] = {"C0GENERAL": "general", "C0ENG": "eng"}
        self.messages: dict[str, dict[str, JSON]] = {c: {} for c in self.channels}
        self.ephemeral: list[JSON] = []
        self.usergroups: dict[str, list[str]] = {}
        self._seq = itertools.count(1)

    def add_usergroup(self, group_id: str, users: list[str]) -> str:
        """Create (or replace) a user group with these members; returns its id."""
        self.usergroups[group_id] = list(users)
        return group_id

    def add_channel(self, name: str) -> str:
        """Create a channel (or find it by name); returns its id."""
        existing = self.channel_id(f"#{name}")
        if existing is not None:
            return existing
        channel_id = f"C{self.core.next_id()}"
        self.channels[channel_id] = name
        self.messages[channel_id] = {}
        return channel_id

    def channel_id(self, channel: str) -> str | None:
        """A channel id from an id or a ``#name``."""
        if channel in self.channels:
            return channel
        name = channel.lstrip("#")
        return next((cid for cid, n in self.channels.items() if n == name), None)

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def routes(self) -> list[Route]:
        """The Starlette routes, mounted under ``/slack/api``."""
        return [Route("/{method}", self.dispatch, methods=["GET", "POST"])]

    def fault_key(self, path: str, body: bytes) -> str:
        return path.strip("/")

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            return json_response(
                {"ok": False, "error": "ratelimited"},
                429,
                {"Retry-After": str(int(fault.retry_after))},
            )
        if fault.status >= 500:
            return Response("upstream connect error", status_code=fault.status)
        return json_response({"ok": False, "error": "internal_error"}, 200)

    async def dispatch(self, request: Request) -> Response:
        method = request.path_params["method"]
        if bearer(request) is None and self.core.config.require_auth:
            return json_response({"ok": False, "error": "not_authed"})
        args: JSON = dict(request.query_params)
        as_json = False
        if request.method == "POST":
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media == "application/json":
                as_json = True
                try:
                    body = await request.json()
                except ValueError:
                    return json_response({"ok": False, "error": "invalid_json"})
                if not isinstance(body, dict):
                    return json_response({"ok": False, "error": "invalid_json"})
                args.update(body)
            elif media in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.form()
                args.update({k: v for k, v in form.items() if isinstance(v, str)})
                args = {k: _decoded(k, v) for k, v in args.items()}
            elif await request.body():
                return json_response({"ok": False, "error": "invalid_form_data"})
        refused = slack_methods().check(method, args, as_json=as_json)
        if refused is not None:
            error, problems = refused
            return json_response(
                {"ok": False, "error": error, "response_metadata": {"messages": problems}}
            )
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return json_response({"ok": False, "error": "unknown_method"})
        result: JSON = handler(args)
        return json_response(result, headers={"X-Slack-Req-Id": f"sandbox-{self.core.next_id()}"})

    def _err(self, error: str) -> JSON:
        return {"ok": False, "error": error}

    def _message(self, args: JSON) -> tuple[str | None, JSON | None]:
        cid = self.channel_id(str(args.get("channel", "")))
        if cid is None:
            return None, None
        return cid, self.messages[cid].get(str(args.get("ts") or args.get("timestamp") or ""))

    def post(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        blocks: list[JSON] | None = None,
        thread_ts: str | None = None,
        metadata: JSON | None = None,
    ) -> JSON:
        """Post a message (as the bot unless ``user`` is given); sends a ``message`` event."""
        cid = self.channel_id(channel)
        assert cid is not None
        bot = user is None
        payload = (metadata or {}).get("event_payload") or {}
        ts = self.core.claim("slack.ts", payload.get("contexten_idempotency_key"))
        if not isinstance(ts, str) or ts in self.messages[cid]:
            ts = self._ts()
        message: JSON = {
            "type": "message",
            "text": text,
            "ts": ts,
            "user": user or self.core.config.slack_bot_user,
            "team": "T0SANDBOX",
        }
        if bot:
            message.update(bot_id=self.core.config.slack_bot_id, app_id="A0CONTEXTEN")
        if blocks:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
        if metadata:
            message["metadata"] = metadata
        self.messages[cid][message["ts"]] = message
        if not bot or self.core.config.webhooks_for_api_calls:
            self._event(
                {
                    **{k: v for k, v in message.items() if k != "metadata"},
                    "channel": cid,
                    "event_ts": message["ts"],
                    "channel_type": "channel",
                }
            )
        return message

    def _event(self, event: JSON) -> None:
        self.core.webhooks.slack_event(
            {
                "token": "sandbox-verification-token",
                "team_id": "T0SANDBOX",
                "api_app_id": "A0CONTEXTEN",
                "event": event,
                "type": "event_callback",
                "event_id": f"Ev{self.core.next_id()}",
                "event_time": int(time.time()),
                "authorizations": [
                    {
                        "team_id": "T0SANDBOX",
                        "user_id": self.core.config.slack_bot_user,
                        "is_bot": True,
                    }
                ],
            }
        )

    def press(self, channel: str, ts: str, action_id: str, *, user: str = "U0ADA") -> JSON:
        """A person presses a button on message ``ts``; sends a ``block_actions`` payload."""
        cid = self.channel_id(channel)
        assert cid is not None
        message = self.messages[cid][ts]
        button = next(
            element
            for block in message.get("blocks", [])
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("action_id") == action_id
        )
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": "ada", "team_id": "T0SANDBOX"},
            "api_app_id": "A0CONTEXTEN",
            "token": "sandbox-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": cid},
            "trigger_id": f"{self.core.next_id()}.sandbox",
            "team": {"id": "T0SANDBOX"},
            "channel": {"id": cid, "name": self.channels[cid]},
            "message": message,
            "response_url": f"https://hooks.slack.com/actions/T0SANDBOX/{self.core.next_id()}/x",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "contexten_approval",
                    "text": button["text"],
                    "value": button.get("value"),
                    "type": "button",
                    "action_ts": self._ts(),
                }
            ],
        }
        self.core.webhooks.slack_interaction(payload)
        return payload

    # -- Web API methods ------------------------------------------------------------------------

    def m_chat_postMessage(self, a: JSON) -> JSON:
        if self.channel_id(str(a.get("channel", ""))) is None:
            return self._err("channel_not_found")
        if not a.get("text") and not a.get("blocks"):
            return self._err("no_text")
        message = self.post(
            str(a["channel"]),
            str(a.get("text") or ""),
            blocks=a.get("blocks"),
            thread_ts=a.get("thread_ts"),
            metadata=a.get("metadata"),
        )
        return {
            "ok": True,
            "channel": self.channel_id(str(a["channel"])),
            "ts": message["ts"],
            "message": {k: v for k, v in message.items() if k != "metadata"},
        }

    def m_chat_postEphemeral(self, a: JSON) -> JSON:
        cid = self.channel_id(str(a.get("channel", "")))
        if cid is None:
            return self._err("channel_not_found")
        if not a.get("text") and not a.get("blocks"):
            return self._err("no_text")
        self.ephemeral.append({"channel": cid, "user": a["user"], "text": a.get("text")})
        return {"ok": True, "message_ts": self._ts()}

    def m_usergroups_users_list(self, a: JSON) -> JSON:
        members = self.usergroups.get(str(a.get("usergroup", "")))
        if members is None:
            return self._err("no_such_subteam")
        return {"ok": True, "users": list(members)}

    def m_chat_update(self, a: JSON) -> JSON:
        cid, message = self._message(a)
        if cid is None:
            return self._err("channel_not_found")
        if message is None:
            return self._err("message_not_found")
        if message["user"] != self.core.config.slack_bot_user:
            return self._err("cant_update_message")
        if a.get("text") is not None:
            message["text"] = a["text"]
        if a.get("blocks") is not None:
            message["blocks"] = a["blocks"]
        message["edited"] = {"user": self.core.config.slack_bot_user, "ts": self._ts()}
        return {
            "ok": True,
            "channel": cid,
            "ts": message["ts"],
            "text": message["text"],
            "message": message,
        }

    def m_chat_delete(self, a: JSON) -> JSON:
        cid, message = self._message(a)
        if cid is None:
            return self._err("channel_not_found")
        if message is None:
            return self._err("message_not_found")
        del self.messages[cid][message["ts"]]
        return {"ok": True, "channel": cid, "ts": message["ts"]}

    def m_reactions_add(self, a: JSON) -> JSON:
        cid, message = self._message(a)
        if cid is None or message is None:
            return self._err("message_not_found" if cid else "channel_not_found")
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == a.get("name")), None)
        if entry and self.core.config.slack_bot_user in entry["users"]:
            return self._err("already_reacted")
        if entry is None:
            entry = {"name": a.get("name"), "users": [], "count": 0}
            reactions.append(entry)
        entry["users"].append(self.core.config.slack_bot_user)
        entry["count"] += 1
        return {"ok": True}

    def m_reactions_remove(self, a: JSON) -> JSON:
        cid, message = self._message(a)
        if cid is None or message is None:
            return self._err("message_not_found" if cid else "channel_not_found")
        reactions = message.get("reactions", [])
        entry = next((r for r in reactions if r["name"] == a.get("name")), None)
        if entry is None or self.core.config.slack_bot_user not in entry["users"]:
            return self._err("no_reaction")
        entry["users"].remove(self.core.config.slack_bot_user)
        entry["count"] -= 1
        message["reactions"] = [r for r in reactions if r["count"] > 0]
        return {"ok": True}

    def m_conversations_history(self, a: JSON) -> JSON:
        cid = self.channel_id(str(a.get("channel", "")))
        if cid is None or not str(a.get("channel", "")).startswith("C"):
            return self._err("channel_not_found")
        latest, oldest = a.get("latest"), a.get("oldest")
        messages = sorted(self.messages[cid].values(), key=lambda m: m["ts"], reverse=True)
        if latest is not None:
            messages = [m for m in messages if m["ts"] <= str(latest)]
        if oldest is not None:
            messages = [m for m in messages if m["ts"] >= str(oldest)]
        messages = [m for m in messages if "thread_ts" not in m or m["thread_ts"] == m["ts"]]
        limit = int(a.get("limit") or 100)
        if str(a.get("include_all_metadata")).lower() not in ("true", "1"):
            messages = [{k: v for k, v in m.items() if k != "metadata"} for m in messages]
        return {
            "ok": True,
            "channel": cid,
            "messages": messages[:limit],
            "has_more": len(messages) > limit,
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        }

    def m_conversations_replies(self, a: JSON) -> JSON:
        cid = self.channel_id(str(a.get("channel", "")))
        if cid is None or not str(a.get("channel", "")).startswith("C"):
            return self._err("channel_not_found")
        ts = str(a.get("ts", ""))
        thread = sorted(
            (m for m in self.messages[cid].values() if m["ts"] == ts or m.get("thread_ts") == ts),
            key=lambda m: m["ts"],
        )
        if not thread:
            return self._err("thread_not_found")
        return {
            "ok": True,
            "channel": cid,
            "messages": thread[: int(a.get("limit") or 100)],
            "has_more": False,
        }

    def m_auth_test(self, a: JSON) -> JSON:
        return {
            "ok": True,
            "url": "https://sandbox.slack.com/",
            "team": "Sandbox",
            "user": "contexten",
            "team_id": "T0SANDBOX",
            "user_id": self.core.config.slack_bot_user,
            "bot_id": self.core.config.slack_bot_id,
        }
