"""Defects found by checking the integrations against the platforms' own descriptions.

Each test failed before its fix; the conformance suite (``test_conformance.py``) checks the
same things more broadly, against the published schemas.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from contexten.events import Event
from contexten.ingress.jsonsafe import loads_object
from contexten.integrations import github
from contexten.integrations.github import GitHubClient
from contexten.integrations.idempotency import id_for_key
from contexten.integrations.linear import webhooks as lw
from contexten.integrations.linear.predicates import label_added, label_removed
from contexten.integrations.slack import webhooks as sw

from .conftest import settings


def test_client_chosen_linear_ids_are_version_4_uuids() -> None:
    # Linear's schema: IssueCreateInput.id / CommentCreateInput.id are "in UUID v4 format".
    for key in ("wf-1:step-1", "x", "LIN-123:comment:7"):
        for scope in ("linear:issue", "linear:comment"):
            value = id_for_key(key, scope)
            parsed = uuid.UUID(value)
            assert parsed.version == 4
            assert parsed.variant == uuid.RFC_4122
            assert id_for_key(key, scope) == value  # still stable
    assert id_for_key("k", "linear:issue") != id_for_key("k", "linear:comment")


async def test_update_pull_request_undo_sends_a_string_body_for_an_empty_description() -> None:
    sent: list[tuple[str, Any]] = []
    pr: dict[str, Any] = {"number": 7, "title": "Fix", "body": None, "node_id": "PR_1"}

    def handler(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content) if request.content else None
        sent.append((request.method, payload))
        if request.method == "PATCH":
            pr.update(payload)
        return httpx.Response(200, json=pr)

    async with GitHubClient(
        settings=settings("https://api.github.com"), transport=httpx.MockTransport(handler)
    ) as gh:
        result = await github.update_pull_request("acme/api", 7, body="Now described", client=gh)
        await github.update_pull_request.undo("acme/api", 7, result=result, client=gh)
        # A step recorded before the fix still carries the null: the undo maps it too.
        old = {**result, "contexten_previous": {"body": None}}
        await github.update_pull_request.undo("acme/api", 7, result=old, client=gh)
    patches = [body for method, body in sent if method == "PATCH"]
    assert patches == [{"body": "Now described"}, {"body": ""}, {"body": ""}]


def test_ssl_check_is_recognised() -> None:
    form = b"ssl_check=1&token=xyzz0WbapA4vBCDEFasx0q6G"
    assert sw.is_ssl_check("application/x-www-form-urlencoded", form)
    assert not sw.is_ssl_check("application/json", form)
    assert not sw.is_ssl_check("application/x-www-form-urlencoded", b"command=%2Fx&ssl_check=1")
    assert not sw.is_ssl_check("application/x-www-form-urlencoded", b"ssl_check=0")


def _slack_message(subtype: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "message", "channel": "C1", "ts": "1.2"}
    if subtype == "message_changed":
        event |= {"subtype": subtype, "message": {"text": "edited ENG-4", "ts": "1.1"}}
    elif subtype == "message_deleted":
        event |= {"subtype": subtype, "deleted_ts": "1.1", "previous_message": {"ts": "1.1"}}
    else:
        event |= {"text": "hello", "user": "U1"}
    return {"type": "event_callback", "event_id": "Ev1", "team_id": "T1", "event": event}


def test_message_edits_and_deletions_have_their_own_types() -> None:
    def kind(payload: dict[str, Any]) -> str:
        body = json.dumps(payload).encode()
        return sw.normalise(sw.classify("application/json", body, loads_object)).type

    assert kind(_slack_message(None)) == "slack.message"
    assert kind(_slack_message("message_changed")) == "slack.message_changed"
    assert kind(_slack_message("message_deleted")) == "slack.message_deleted"
    # Other subtypes (bot_message, thread_broadcast...) are still messages.
    bot = _slack_message(None)
    bot["event"]["subtype"] = "bot_message"
    assert kind(bot) == "slack.message"


def test_linear_correlation_falls_back_to_the_url() -> None:
    comment = {
        "action": "create",
        "type": "Comment",
        "data": {"id": "c-1", "body": "LGTM", "issueId": "i-1"},
        "url": "https://linear.app/acme/issue/ENG-42/fix-login#comment-c1",
    }
    event = lw.normalise(comment)
    assert event.correlation_id == "ENG-42"
    issue = {
        "action": "update",
        "type": "Issue",
        "data": {"id": "i-2", "url": "https://linear.app/acme/issue/OPS-7/slug"},
    }
    assert lw.normalise(issue).correlation_id == "OPS-7"
    elsewhere = {**issue, "data": {"id": "i-3", "url": "https://example.com/acme/issue/OPS-7"}}
    assert lw.normalise(elsewhere).correlation_id is None


def _github_label_event(action: str, name: str) -> Event:
    return Event(
        type=f"github.issues.{action}",
        source="github",
        subject="acme/api#1",
        data={"action": action, "label": {"id": 208045946, "name": name, "node_id": "MDU6"}},
    )


def test_label_predicates_read_githubs_labeled_action() -> None:
    assert label_added("Agent")(_github_label_event("labeled", "agent"))
    assert label_added("208045946")(_github_label_event("labeled", "x"))
    assert not label_added("agent")(_github_label_event("labeled", "bug"))
    assert not label_added("agent")(_github_label_event("unlabeled", "agent"))
    assert label_removed("agent")(_github_label_event("unlabeled", "agent"))
    assert not label_removed("agent")(_github_label_event("labeled", "agent"))
