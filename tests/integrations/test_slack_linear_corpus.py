"""Public Slack and Linear deliveries through the ingress: each stored once, with its type,
subject, correlation id and dedup key; a redelivery stores nothing more.

The payloads are in ``fixtures/slack`` and ``fixtures/linear``; where each comes from and
under which licence is in ``fixtures/SOURCES.md``. Every file there must have a row below
(a new file without one fails the test), and the rows were checked by hand against the
payloads, not copied from the normaliser's output.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from contexten.ingress import IngressConfig, create_ingress_app
from contexten.ingress.jsonsafe import loads_object
from contexten.integrations.linear import webhooks as linear
from contexten.integrations.slack import webhooks as slack
from contexten.store import EventStore, create_store

SECRET = "corpus-secret"
FIXTURES = Path(__file__).parent / "fixtures"
FORM = "application/x-www-form-urlencoded"

# file stem: (type, subject, correlation id, dedup key; None: a digest of the signed body,
# for the requests that carry neither an event id nor a trigger id).
SLACK: dict[str, tuple[str, str, str | None, str | None]] = {
    "block_actions__body": (
        "slack.block_actions",
        "C111",
        "slack:C111:111.222",
        "slack:trigger:111.222.valid",
    ),
    "attachment_actions__body": (
        "slack.interactive_message",
        "C222",
        "slack:C222:1520965348.000538",  # the message its button was on
        "slack:trigger:111.222.valid",
    ),
    "block_suggestion__body": ("slack.block_suggestion", "view-id", None, None),
    # Legacy dialogs carry no trigger id: keyed by the signed body.
    "dialogs__cancellation_body": ("slack.dialog_cancellation", "C111", None, None),
    "dialogs__submission_body": ("slack.dialog_submission", "C111", None, None),
    "dialogs__suggestion_body": ("slack.dialog_suggestion", "C111", None, None),
    "events__app_uninstalled_body": ("slack.app_uninstalled", "T111", None, "slack:Ev111"),
    "events__body": ("slack.member_left_channel", "C111", None, "slack:Ev111"),
    "events__join_event_body": ("slack.member_joined_channel", "C111", None, "slack:Ev111"),
    "events__left_event_body": ("slack.member_left_channel", "C111", None, "slack:Ev111"),
    "events__message_file_share_body": (
        "slack.message",
        "G111",
        "slack:G111:1610493715.001000",
        "slack:Ev111",
    ),
    "events__tokens_revoked_body": ("slack.tokens_revoked", "T111", None, "slack:Ev111"),
    "events__valid_event_body": (
        "slack.app_mention",
        "C111",
        "slack:C111:1595926230.009600",
        "slack:Ev111",
    ),
    "events__valid_reaction_added_body": (
        "slack.reaction_added",
        "C111",
        "slack:C111:1599529504.000400",  # the reacted-to message's thread
        "slack:Ev111",
    ),
    "events_org_apps__event_payload": (
        "slack.message",
        "C111",
        "slack:C111:1606810819.000800",
        "slack:Ev111",
    ),
    "events_shared_channels__app_uninstalled_body": (
        "slack.app_uninstalled",
        "T_INSTALLED",
        None,
        "slack:Ev111",
    ),
    "events_shared_channels__event_body": (
        "slack.reaction_added",
        "C111",
        "slack:C111:1599529504.000400",
        "slack:Ev111",
    ),
    "events_shared_channels__join_event_body": (
        "slack.member_joined_channel",
        "C111",
        None,
        "slack:Ev111",
    ),
    "events_shared_channels__left_event_body": (
        "slack.member_left_channel",
        "C111",
        None,
        "slack:Ev111",
    ),
    "events_shared_channels__tokens_revoked_body": (
        "slack.tokens_revoked",
        "T_INSTALLED",
        None,
        "slack:Ev111",
    ),
    "events_shared_channels__valid_event_body": (
        "slack.app_mention",
        "C111",
        "slack:C111:1595926230.009600",
        "slack:Ev111",
    ),
    "events_shared_channels__valid_reaction_added_body": (
        "slack.reaction_added",
        "C111",
        "slack:C111:1599529504.000400",
        "slack:Ev111",
    ),
    "message__message_body": (
        "slack.message",
        "C111",
        "slack:C111:1596183880.004200",
        "slack:Ev111",
    ),
    "message__message_body2": (
        "slack.message",
        "C111",
        "slack:C111:1596183880.004200",
        "slack:Ev111",
    ),
    # Its text names "JIRA-1234", which has the shape of an issue identifier; with no
    # CONTEXTEN_LINEAR_TEAM_KEYS configured, any such shape correlates (by design).
    "message__message_body3": ("slack.message", "C111", "JIRA-1234", "slack:Ev111"),
    "message_bot__bot_message_event_payload": (
        "slack.message",
        "C111",
        "slack:C111:1610261539.000900",
        "slack:Ev222",
    ),
    "message_bot__classic_bot_message_event_payload": (
        "slack.message",
        "C111",
        "slack:C111:1610262363.001600",
        "slack:Ev333",
    ),
    "message_bot__user_message_event_payload": (
        "slack.message",
        "C111",
        "slack:C111:1610261659.001400",
        "slack:Ev111",
    ),
    # An edit and a deletion belong to the edited/deleted message's thread (its ts), not to
    # one their own change-event ts would start.
    "message_changed__event_payload": (
        "slack.message_changed",
        "C111",
        "slack:C111:1665102338.901939",
        "slack:Ev111",
    ),
    "message_deleted__event_payload": (
        "slack.message_deleted",
        "C111",
        "slack:C111:1665368619.804829",
        "slack:Ev111",
    ),
    "message_file_share__event_payload": (
        "slack.message",
        "C111",
        "slack:C111:1652227646.593159",
        "slack:Ev03EGJQAVMM",
    ),
    "message_thread_broadcast__event_payload": (
        "slack.message",
        "C111",
        "slack:C111:1633663824.000500",
        "slack:Ev111",
    ),
    "shortcut__global_shortcut_body": (
        "slack.shortcut",
        "test-shortcut",
        None,
        "slack:trigger:111.111.xxxxxx",
    ),
    "shortcut__message_shortcut_body": (
        "slack.message_action",
        "C111",
        "slack:C111:1583636382.000300",
        "slack:trigger:111.222.xxx",
    ),
    "slash_command__slash_command_body": (
        "slack.command",
        "C111",
        None,
        "slack:trigger:111.111.xxx",
    ),
    "view_closed__body": ("slack.view_closed", "view-id", None, None),
    "view_submission__body": (
        "slack.view_submission",
        "view-id",
        None,
        "slack:trigger:111.222.valid",
    ),
    "view_submission__connect_channel_payload": (
        "slack.view_submission",
        "view-id",
        None,
        "slack:trigger:111.222.xxx",
    ),
    "view_submission__response_url_payload_body": (
        "slack.view_submission",
        "view-id",
        None,
        "slack:trigger:111.222.xxx",
    ),
}

_LABEL = "issue_label/13aa50db-xxxx-xxxx-xxxx-1cdd26695e65"
_PROJECT = "project/5ad6280f-xxxx-xxxx-xxxx-b869cfa62b33"

# file stem: (type, subject, correlation id)
LINEAR: dict[str, tuple[str, str, str | None]] = {
    "createComment": ("linear.comment.created", "KOR-12", "KOR-12"),  # from the url
    "createIssue": ("linear.issue.created", "KOR-11", "KOR-11"),
    "createIssueLabel": ("linear.issue_label.created", _LABEL, None),
    "createProjectForAllSetting": ("linear.project.created", _PROJECT, None),
    "createProjectForDefault": (
        "linear.project.created",
        "project/14449f5f-xxxx-xxxx-xxxx-155b5c08af2a",
        None,
    ),
    "createReaction": (
        "linear.reaction.created",
        "reaction/c6d50a94-xxxx-xxxx-xxxx-8a552952a50e",
        None,
    ),
    # Names only its issue's id: nothing to correlate on.
    "removeComment": (
        "linear.comment.removed",
        "comment/2f9e16c8-xxxx-xxxx-xxxx-932793a0f189",
        None,
    ),
    # No url, no identifier: team key and number.
    "removeIssue": ("linear.issue.removed", "KOR-12", "KOR-12"),
    "removeIssueLabel": ("linear.issue_label.removed", _LABEL, None),
    "removeProject": ("linear.project.removed", _PROJECT, None),
    "updateComment": ("linear.comment.updated", "KOR-15", "KOR-15"),
    "updateCycleForChangeStartTime": (
        "linear.cycle.updated",
        "cycle/397b115e-xxxx-xxxx-xxxx-5012096c7484",
        None,
    ),
    "updateCycleForRename": (
        "linear.cycle.updated",
        "cycle/8becebd5-xxxx-xxxx-xxxx-5a4c46206590",
        None,
    ),
    "updateIssueAssign": ("linear.issue.updated", "KOR-11", "KOR-11"),
    "updateIssueCycle": ("linear.issue.updated", "KOR-11", "KOR-11"),
    "updateIssueDueDate": ("linear.issue.updated", "KOR-11", "KOR-11"),
    "updateIssueEstimated": ("linear.issue.updated", "KOR-11", "KOR-11"),
    "updateIssueForLabel": ("linear.issue.updated", "KOR-11", "KOR-11"),
    "updateIssueLabel": ("linear.issue_label.updated", _LABEL, None),
    "updateProjectForRename": ("linear.project.updated", _PROJECT, None),
}


def _files(platform: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / platform).iterdir() if p.suffix in (".json", ".form"))


def test_every_fixture_has_an_expectation_and_a_source() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text()
    for platform, table in (("slack", SLACK), ("linear", LINEAR)):
        stems = {p.stem for p in _files(platform)}
        assert stems == set(table), platform
        for path in _files(platform):
            assert path.name in sources, path.name


def _slack_body(path: Path) -> tuple[bytes, str]:
    """The request Slack sends for a fixture: JSON for the Events API, a form otherwise."""
    if path.suffix == ".form":
        return path.read_bytes().rstrip(b"\n"), FORM
    payload = json.loads(path.read_bytes())
    if payload["type"] == "event_callback":
        return json.dumps(payload).encode(), "application/json"
    return urlencode({"payload": json.dumps(payload)}).encode(), FORM


@asynccontextmanager
async def _ingress() -> AsyncIterator[tuple[httpx.AsyncClient, EventStore]]:
    """A fresh store and ingress per delivery: Slack's own fixtures reuse ``Ev111``."""
    async with create_store("memory://") as store:
        config = IngressConfig.from_env(
            {"CONTEXTEN_SLACK_SIGNING_SECRET": SECRET, "CONTEXTEN_LINEAR_WEBHOOK_SECRET": SECRET}
        )
        app = create_ingress_app(store, config)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingress.test"
        ) as client:
            yield client, store


def _slack_headers(body: bytes, content_type: str, **extra: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "Content-Type": content_type,
        slack.TIMESTAMP_HEADER: stamp,
        slack.SIGNATURE_HEADER: slack.sign(SECRET, stamp, body),
        **extra,
    }


@pytest.mark.parametrize("path", _files("slack"), ids=lambda p: p.stem)
async def test_slack_delivery_is_stored_once_as_expected(path: Path) -> None:
    kind, subject, correlation, key = SLACK[path.stem]
    body, content_type = _slack_body(path)
    request = slack.classify(content_type, body, loads_object)
    if key is None:  # no event id, no trigger id: the signed body is the identity
        assert slack.dedup_key(request, body).startswith("slack:sha256:")
    else:
        assert slack.dedup_key(request, body) == key
    async with _ingress() as (client, store):
        first = await client.post(
            "/webhooks/slack", content=body, headers=_slack_headers(body, content_type)
        )
        assert first.status_code in (200, 202), first.text
        # Slack's retry of the same request: signed anew, with X-Slack-Retry-Num.
        retry = _slack_headers(body, content_type, **{slack.RETRY_HEADER: "1"})
        again = await client.post("/webhooks/slack", content=body, headers=retry)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate"}
        stored = await store.read_all(limit=100)
    assert len(stored) == 1
    event = stored[0].event
    assert (event.type, event.subject, event.correlation_id) == (kind, subject, correlation)
    assert event.source == "slack"
    assert event.data == json.loads(json.dumps(request.payload))


def _load(path: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(path.read_bytes())
    return payload


def _linear_body(payload: dict[str, Any], later_ms: int = 0) -> bytes:
    # Linear sends webhookTimestamp on every delivery today; these 2021 captures predate it.
    stamp = int(time.time() * 1000) + later_ms
    return json.dumps({**payload, "webhookTimestamp": stamp}).encode()


@pytest.mark.parametrize("path", _files("linear"), ids=lambda p: p.stem)
async def test_linear_delivery_is_stored_once_as_expected(path: Path) -> None:
    kind, subject, correlation = LINEAR[path.stem]
    payload = _load(path)
    delivery = f"delivery-{path.stem}"
    async with _ingress() as (client, store):
        body = _linear_body(payload)
        headers = {
            "Content-Type": "application/json",
            linear.DELIVERY_HEADER: delivery,
            linear.SIGNATURE_HEADER: linear.sign(SECRET, body),
        }
        first = await client.post("/webhooks/linear", content=body, headers=headers)
        assert first.status_code in (200, 202), first.text
        # A redelivery: same Linear-Delivery, a later webhookTimestamp (so another body).
        later = _linear_body(payload, later_ms=1000)
        assert later != body
        headers[linear.SIGNATURE_HEADER] = linear.sign(SECRET, later)
        again = await client.post("/webhooks/linear", content=later, headers=headers)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate"}
        stored = await store.read_all(limit=100)
    assert linear.dedup_key(delivery, body) == f"linear:{delivery}"
    assert len(stored) == 1
    event = stored[0].event
    assert (event.type, event.subject, event.correlation_id) == (kind, subject, correlation)
    assert (event.source, event.delivery_id) == ("linear", delivery)
    assert event.data["data"] == payload["data"]
