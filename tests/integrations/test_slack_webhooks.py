"""Slack request verification, recognition and normalisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from contexten.exceptions import MalformedPayload, SignatureInvalid
from contexten.ingress.jsonsafe import loads_object
from contexten.integrations.slack import webhooks as sw

SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d1"
    b"0d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
DOC_NOW = datetime.fromtimestamp(int(DOC_TIMESTAMP), UTC)


def test_slack_documentation_vector() -> None:
    # "Verifying requests from Slack": the slash-command example and its signature.
    assert sw.sign(SECRET, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE
    sw.verify(DOC_BODY, DOC_SIGNATURE, DOC_TIMESTAMP, [SECRET], DOC_NOW)


@pytest.mark.parametrize("offset", [0, 299, -299, 300, -300])
def test_timestamp_within_five_minutes_either_way(offset: int) -> None:
    now = DOC_NOW + timedelta(seconds=offset)
    sw.verify(DOC_BODY, DOC_SIGNATURE, DOC_TIMESTAMP, [SECRET], now)


@pytest.mark.parametrize("offset", [301, -301, 86400])
def test_stale_or_future_timestamp_is_refused(offset: int) -> None:
    with pytest.raises(SignatureInvalid, match="tolerance"):
        sw.verify(
            DOC_BODY, DOC_SIGNATURE, DOC_TIMESTAMP, [SECRET], DOC_NOW + timedelta(seconds=offset)
        )


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [
        (None, DOC_TIMESTAMP),
        (DOC_SIGNATURE, None),
        (DOC_SIGNATURE, "1531420618.5"),
        (DOC_SIGNATURE, "-1531420618"),
        (DOC_SIGNATURE, "9" * 40),
        (DOC_SIGNATURE, "\uff11\uff15\uff13\uff11"),  # full-width digits: isdigit(), not ASCII
        (DOC_SIGNATURE.replace("v0=", "v1="), DOC_TIMESTAMP),
        (DOC_SIGNATURE[:-1] + "0", DOC_TIMESTAMP),
        ("v0=" + "ff" * 32, DOC_TIMESTAMP),
    ],
)
def test_bad_headers_are_refused(signature: str | None, timestamp: str | None) -> None:
    with pytest.raises(SignatureInvalid) as info:
        sw.verify(DOC_BODY, signature, timestamp, [SECRET], DOC_NOW)
    if signature:
        assert signature[3:] not in str(info.value)


def test_signed_timestamp_cannot_be_swapped() -> None:
    later = str(int(DOC_TIMESTAMP) + 10)
    with pytest.raises(SignatureInvalid, match="mismatch"):
        sw.verify(DOC_BODY, DOC_SIGNATURE, later, [SECRET], DOC_NOW)


def test_rotation_and_no_secret() -> None:
    sw.verify(DOC_BODY, DOC_SIGNATURE, DOC_TIMESTAMP, [b"new", SECRET], DOC_NOW)
    with pytest.raises(SignatureInvalid, match="no signing secret"):
        sw.verify(DOC_BODY, DOC_SIGNATURE, DOC_TIMESTAMP, [], DOC_NOW)


# -- recognition and normalisation -----------------------------------------------------------


def _classify(content_type: str, body: bytes) -> sw.SlackRequest:
    return sw.classify(content_type, body, loads_object)


def event_callback(event: dict[str, Any], event_id: str = "Ev01") -> dict[str, Any]:
    return {
        "token": "x",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1531420618,
        "event": event,
    }


def test_app_mention() -> None:
    body = json.dumps(
        event_callback(
            {
                "type": "app_mention",
                "user": "U1",
                "text": "<@U0BOT> please look at ENG-42",
                "ts": "1531420618.000200",
                "channel": "C1",
            }
        )
    ).encode()
    request = _classify("application/json", body)
    event = sw.normalise(request)
    assert request.kind == "events_api"
    assert event.type == "slack.app_mention"
    assert (event.subject, event.actor, event.delivery_id) == ("C1", "U1", "Ev01")
    assert event.correlation_id == "ENG-42"
    assert event.data["event"]["text"].startswith("<@U0BOT>")
    assert sw.dedup_key(request, body) == "slack:Ev01"


def test_threaded_message_correlates_by_thread() -> None:
    payload = event_callback(
        {
            "type": "message",
            "user": "U1",
            "text": "done?",
            "ts": "1531420700.000300",
            "thread_ts": "1531420618.000200",
            "channel": "C1",
        }
    )
    event = sw.normalise(_classify("application/json; charset=utf-8", json.dumps(payload).encode()))
    assert event.type == "slack.message"
    assert event.correlation_id == "slack:C1:1531420618.000200"


def test_edit_belongs_to_the_edited_message_thread_and_its_editor() -> None:
    # Slack's message_changed: its own ts is the change event's, not the message's.
    payload = event_callback(
        {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": "C1",
            "ts": "1531420900.000900",
            "message": {"type": "message", "text": "fixed", "edited": {"user": "U2"}},
            "previous_message": {"type": "message", "user": "U2", "ts": "1531420618.000200"},
        }
    )
    event = sw.normalise(_classify("application/json", json.dumps(payload).encode()))
    assert event.type == "slack.message_changed"
    assert (event.correlation_id, event.actor) == ("slack:C1:1531420618.000200", "U2")


def test_deletion_belongs_to_the_deleted_message_thread() -> None:
    payload = event_callback(
        {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "channel": "C1",
            "ts": "1531420900.000900",
            "deleted_ts": "1531420700.000300",
            "previous_message": {"type": "message", "user": "U1", "text": "about ENG-7"},
        }
    )
    event = sw.normalise(_classify("application/json", json.dumps(payload).encode()))
    assert event.type == "slack.message_deleted"
    assert event.correlation_id == "ENG-7"  # the deleted text still names the issue
    assert event.actor is None  # Slack does not say who deleted it
    del payload["event"]["previous_message"]["text"]
    event = sw.normalise(_classify("application/json", json.dumps(payload).encode()))
    assert event.correlation_id == "slack:C1:1531420700.000300"


def test_reaction_points_at_its_item() -> None:
    payload = event_callback(
        {
            "type": "reaction_added",
            "user": "U1",
            "reaction": "thumbsup",
            "item": {"type": "message", "channel": "C9", "ts": "1.2"},
        }
    )
    event = sw.normalise(_classify("application/json", json.dumps(payload).encode()))
    assert (event.type, event.subject, event.correlation_id) == (
        "slack.reaction_added",
        "C9",
        "slack:C9:1.2",
    )


def test_url_verification_is_recognised_not_normalised() -> None:
    body = (
        b'{"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",'
        b' "type": "url_verification"}'
    )
    request = _classify("application/json", body)
    assert request.kind == "url_verification"
    assert request.payload["challenge"].startswith("3eZ")
    with pytest.raises(MalformedPayload):
        sw.normalise(request)
    with pytest.raises(MalformedPayload):
        _classify("application/json", b'{"type": "url_verification"}')


def test_block_actions_interactivity() -> None:
    payload = {
        "type": "block_actions",
        "trigger_id": "123.456.abc",
        "user": {"id": "U2", "username": "bob"},
        "team": {"id": "T1"},
        "container": {"type": "message", "channel_id": "C1", "message_ts": "10.1"},
        "channel": {"id": "C1", "name": "eng"},
        "message": {"ts": "10.1", "text": "Approve ENG-7?"},
        "actions": [{"action_id": "approve", "value": "yes"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    request = _classify("application/x-www-form-urlencoded", body)
    event = sw.normalise(request)
    assert request.kind == "interactivity"
    assert event.type == "slack.block_actions"
    assert (event.subject, event.actor, event.correlation_id) == ("C1", "U2", "ENG-7")
    assert event.data["actions"][0]["action_id"] == "approve"
    assert sw.dedup_key(request, body) == "slack:trigger:123.456.abc"


def test_legacy_attachment_action_correlates_by_its_message_thread() -> None:
    # interactive_message: the message is ``original_message``, its ts also ``message_ts``.
    payload = {
        "type": "interactive_message",
        "callback_id": "pick",
        "channel": {"id": "C2"},
        "user": {"id": "U1"},
        "message_ts": "1520965348.000538",
        "original_message": {"type": "message", "text": "for ENG-3", "ts": "1520965348.000538"},
        "trigger_id": "13.57",
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    event = sw.normalise(_classify("application/x-www-form-urlencoded", body))
    assert (event.type, event.subject, event.correlation_id) == (
        "slack.interactive_message",
        "C2",
        "ENG-3",
    )
    del payload["original_message"]
    body = urlencode({"payload": json.dumps(payload)}).encode()
    event = sw.normalise(_classify("application/x-www-form-urlencoded", body))
    assert event.correlation_id == "slack:C2:1520965348.000538"


def test_view_submission_without_channel() -> None:
    payload = {
        "type": "view_submission",
        "trigger_id": "9.9.9",
        "user": {"id": "U2"},
        "team": {"id": "T1"},
        "view": {"callback_id": "new-task", "state": {"values": {}}},
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    event = sw.normalise(_classify("application/x-www-form-urlencoded", body))
    assert (event.type, event.subject, event.correlation_id) == (
        "slack.view_submission",
        "new-task",
        None,
    )


def test_slash_command() -> None:
    request = _classify("application/x-www-form-urlencoded", DOC_BODY)
    event = sw.normalise(request)
    assert request.kind == "command"
    assert event.type == "slack.command"
    assert event.data["command"] == "/webhook-collect"
    assert (event.subject, event.actor) == ("G8PSS9T3V", "U2CERLKJA")
    assert sw.dedup_key(request, DOC_BODY).startswith("slack:trigger:398738663015.")


def test_key_without_event_id_or_trigger_is_a_body_digest() -> None:
    request = sw.SlackRequest("interactivity", {"type": "view_closed"})
    assert sw.dedup_key(request, b"a").startswith("slack:sha256:")
    assert sw.dedup_key(request, b"a") != sw.dedup_key(request, b"b")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"text=hello"),  # neither payload nor command
        ("application/x-www-form-urlencoded", b"\xff\xfe=1"),
        ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * 500)),
        ("application/x-www-form-urlencoded", b"payload=%7B%22a%22%3A1%7D"),  # no type
        ("application/x-www-form-urlencoded", b"payload=not-json"),
        ("application/json", b'{"event_id": "Ev1"}'),
        ("application/json", b'{"type": "event_callback", "event": "x"}'),
        ("application/json", b"[]"),
    ],
)
def test_malformed_requests(content_type: str, body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        _classify(content_type, body)
