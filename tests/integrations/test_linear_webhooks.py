"""Linear webhook verification, timestamp window, normalisation and predicates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contexten.exceptions import MalformedPayload, SignatureInvalid
from contexten.integrations.linear import webhooks as lw
from contexten.integrations.linear.predicates import changed, label_added, label_removed, moved_to

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SECRET = b"lin_wh_secret"


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def issue_update(**updated_from: Any) -> dict[str, Any]:
    """A Linear ``Issue`` ``update`` payload shaped like Linear's documentation example."""
    return {
        "action": "update",
        "type": "Issue",
        "createdAt": "2030-01-01T00:00:00.000Z",
        "organizationId": "org-1",
        "url": "https://linear.app/acme/issue/ENG-123/fix-login",
        "webhookId": "wh-1",
        "webhookTimestamp": _ms(NOW),
        "actor": {"id": "user-1", "name": "Alice", "type": "user"},
        "data": {
            "id": "issue-uuid",
            "identifier": "ENG-123",
            "title": "Fix login",
            "stateId": "state-progress",
            "state": {"id": "state-progress", "name": "In Progress", "type": "started"},
            "labelIds": ["label-bug", "label-agent"],
            "labels": [
                {"id": "label-bug", "name": "Bug", "color": "#f00"},
                {"id": "label-agent", "name": "agent", "color": "#0f0"},
            ],
            "priority": 2,
        },
        "updatedFrom": {"updatedAt": "2029-12-31T00:00:00.000Z", **updated_from},
    }


def test_signature_and_rotation() -> None:
    body = json.dumps(issue_update()).encode()
    lw.verify(body, lw.sign(SECRET, body), [SECRET])
    lw.verify(body, lw.sign(b"next", body), [SECRET, b"next"])
    for bad in (None, "", "0" * 64, lw.sign(b"other", body), lw.sign(SECRET, body + b" ")):
        with pytest.raises(SignatureInvalid):
            lw.verify(body, bad, [SECRET])
    with pytest.raises(SignatureInvalid, match="no webhook secret"):
        lw.verify(body, lw.sign(SECRET, body), [])


def test_known_vector() -> None:
    # Independently computed: printf '{"a":1}' | openssl dgst -sha256 -hmac lin_wh_secret
    expected = "dbb59f00518dbda900e3d97f59470d684430ded880b445c8014b0fbb5cd531d1"
    assert lw.sign(SECRET, b'{"a":1}') == expected
    lw.verify(b'{"a":1}', expected.upper(), [SECRET])  # hex case does not matter


@pytest.mark.parametrize("offset", [0, 59, -59, 60, -60])
def test_timestamp_within_a_minute_either_way(offset: int) -> None:
    lw.check_timestamp({"webhookTimestamp": _ms(NOW + timedelta(seconds=offset))}, NOW)


@pytest.mark.parametrize("offset", [61, -61, 3600, -86400])
def test_stale_or_future_timestamp_is_refused(offset: int) -> None:
    with pytest.raises(SignatureInvalid, match="tolerance"):
        lw.check_timestamp({"webhookTimestamp": _ms(NOW + timedelta(seconds=offset))}, NOW)


@pytest.mark.parametrize("value", [None, "1893456000000", True, [1], {"ms": 1}])
def test_missing_or_non_numeric_timestamp_is_refused(value: Any) -> None:
    payload = {} if value is None else {"webhookTimestamp": value}
    with pytest.raises(SignatureInvalid, match="missing"):
        lw.check_timestamp(payload, NOW)


@pytest.mark.parametrize(
    ("kind", "action", "expected"),
    [
        ("Issue", "update", "linear.issue.updated"),
        ("Issue", "create", "linear.issue.created"),
        ("Comment", "remove", "linear.comment.removed"),
        ("IssueLabel", "create", "linear.issue_label.created"),
        ("ProjectUpdate", "update", "linear.project_update.updated"),
        ("OAuthApp", "revoke", "linear.o_auth_app.revoked"),
        ("Issue", "restore", "linear.issue.restored"),
    ],
)
def test_event_types(kind: str, action: str, expected: str) -> None:
    assert lw.event_type({"type": kind, "action": action}) == expected


def test_type_and_action_are_required() -> None:
    with pytest.raises(MalformedPayload):
        lw.event_type({"action": "update"})
    with pytest.raises(MalformedPayload):
        lw.event_type({"type": "Issue", "action": 3})


def test_issue_update_normalises() -> None:
    payload = issue_update(stateId="state-todo", labelIds=["label-bug"])
    event = lw.normalise(payload, delivery_id="ld-1", time=NOW)
    assert event.type == "linear.issue.updated"
    assert event.source == "linear"
    assert event.subject == "ENG-123"
    assert event.correlation_id == "ENG-123"
    assert event.actor == "Alice"
    assert event.delivery_id == "ld-1"
    assert event.time == NOW
    assert event.data["data"]["title"] == "Fix login"
    assert event.data["updatedFrom"]["stateId"] == "state-todo"
    assert event.data["changes"] == {
        "stateId": {"from": "state-todo", "to": "state-progress"},
        "labelIds": {"from": ["label-bug"], "to": ["label-bug", "label-agent"]},
    }
    assert "changes" not in payload  # the caller's dict is not modified


def test_comment_takes_its_issue_identifier() -> None:
    payload = {
        "action": "create",
        "type": "Comment",
        "data": {"id": "c-1", "body": "see OPS-2", "issue": {"id": "i", "identifier": "ENG-9"}},
    }
    event = lw.normalise(payload)
    assert (event.subject, event.correlation_id) == ("ENG-9", "ENG-9")
    assert event.data["changes"] == {}


def test_issue_without_identifier_or_url_takes_team_key_and_number() -> None:
    # Linear's remove deliveries (and older payloads) carry neither identifier nor url.
    payload = {
        "action": "remove",
        "type": "Issue",
        "data": {"id": "i-1", "number": 12, "team": {"id": "t", "key": "KOR"}},
    }
    event = lw.normalise(payload)
    assert (event.subject, event.correlation_id) == ("KOR-12", "KOR-12")
    # Only for issues, and only from a well-formed pair.
    assert lw.normalise({**payload, "type": "Cycle"}).correlation_id is None
    for number in (True, 0, "12", None):
        bad = {**payload, "data": {**payload["data"], "number": number}}
        assert lw.normalise(bad).correlation_id is None, number


def test_entity_without_identifier() -> None:
    payload = {"action": "create", "type": "Project", "data": {"id": "p-1", "name": "Q3 (ENG-5)"}}
    event = lw.normalise(payload)
    assert event.subject == "project/p-1"
    assert event.correlation_id is None
    payload["data"]["description"] = "Tracks ENG-5"
    assert lw.normalise(payload).correlation_id == "ENG-5"


def test_dedup_keys() -> None:
    assert lw.dedup_key("ld-1", b"{}") == "linear:ld-1"
    assert lw.dedup_key(None, b"{}") == lw.dedup_key("", b"{}")
    assert lw.dedup_key(None, b"{}").startswith("linear:sha256:")
    assert lw.dedup_key(None, b"{}") != lw.dedup_key(None, b"{ }")


# -- predicates ------------------------------------------------------------------------------


def test_changed() -> None:
    event = lw.normalise(issue_update(stateId="state-todo"))
    assert changed("stateId")(event)
    assert changed("priority", "stateId")(event)
    assert not changed("priority")(event)
    assert not changed("updatedAt")(event)  # bookkeeping, not a change
    assert not changed("stateId")(lw.normalise({**issue_update(), "updatedFrom": None}))
    with pytest.raises(ValueError, match="at least one"):
        changed()


def test_label_added_by_name_or_id() -> None:
    event = lw.normalise(issue_update(labelIds=["label-bug"]))
    assert label_added("agent")(event)
    assert label_added("AGENT")(event)
    assert label_added("label-agent")(event)
    assert not label_added("Bug")(event)  # it was there before
    assert not label_removed("Bug")(event)


def test_label_not_added_when_labels_did_not_change() -> None:
    assert not label_added("agent")(lw.normalise(issue_update(title="Old title")))
    created = lw.normalise({**issue_update(), "action": "create", "updatedFrom": None})
    assert not label_added("agent")(created)


def test_label_removed_by_id() -> None:
    event = lw.normalise(issue_update(labelIds=["label-bug", "label-agent", "label-old"]))
    assert label_removed("label-old")(event)
    assert not label_removed("agent")(event)


def test_labels_as_a_graphql_connection() -> None:
    payload = issue_update(labelIds=[])
    payload["data"]["labels"] = {"nodes": payload["data"]["labels"]}
    assert label_added("agent")(lw.normalise(payload))


def test_moved_to() -> None:
    event = lw.normalise(issue_update(stateId="state-todo"))
    assert moved_to("in progress")(event)
    assert not moved_to("Done")(event)
    assert not moved_to("In Progress")(lw.normalise(issue_update(priority=1)))
