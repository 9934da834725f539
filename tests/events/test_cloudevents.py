"""The CloudEvents 1.0 structured-mode mapping, both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given

from contexten.events import Event, decode_json, encode_json, from_cloudevent, to_cloudevent
from contexten.exceptions import InvalidEvent

from .strategies import events


@given(events)
def test_round_trip_through_cloudevents_json(event: Event) -> None:
    wire = encode_json(to_cloudevent(event))
    assert from_cloudevent(decode_json(wire)) == event


def test_attributes_follow_the_spec() -> None:
    event = Event(
        type="github.push",
        source="github",
        subject="acme/app",
        data={"ref": "refs/heads/main"},
        correlation_id="LIN-7",
        causation_id="c",
        delivery_id="d",
        actor="octocat",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    ce = json.loads(encode_json(to_cloudevent(event)))
    assert ce["specversion"] == "1.0"
    assert ce["datacontenttype"] == "application/json"
    assert ce["time"].endswith("Z")
    assert (ce["id"], ce["source"], ce["type"], ce["subject"]) == (
        event.id,
        "github",
        "github.push",
        "acme/app",
    )
    assert (ce["correlationid"], ce["causationid"], ce["deliveryid"], ce["actor"]) == (
        "LIN-7",
        "c",
        "d",
        "octocat",
    )
    assert all(k.isalnum() and k.islower() for k in ce), "extension names are [a-z0-9]"


def test_optional_attributes_are_left_out() -> None:
    ce = to_cloudevent(Event(type="a.b"))
    assert not {"subject", "correlationid", "causationid", "deliveryid", "actor"} & set(ce)


def test_missing_data_and_time_default() -> None:
    event = from_cloudevent({"specversion": "1.0", "id": "1", "source": "s", "type": "a.b"})
    assert event.data == {}
    assert event.time.tzinfo is not None
    event = from_cloudevent(
        {"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "data": None}
    )
    assert event.data == {}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "must be a JSON object"),
        ({"id": "1", "source": "s", "type": "a"}, "specversion"),
        ({"specversion": "0.3", "id": "1", "source": "s", "type": "a"}, "specversion"),
        ({"specversion": "1.0", "source": "s", "type": "a"}, "'id' is required"),
        ({"specversion": "1.0", "id": "1", "type": "a"}, "'source' is required"),
        ({"specversion": "1.0", "id": "1", "source": "s", "type": ""}, "'type' is required"),
        ({"specversion": "1.0", "id": "1", "source": "s", "type": "a", "data": [1]}, "object"),
        ({"specversion": "1.0", "id": "1", "source": "s", "type": "a", "time": "x"}, "RFC 3339"),
        ({"specversion": "1.0", "id": "1", "source": "s", "type": "Bad Type"}, "event type"),
    ],
)
def test_bad_cloudevents_are_refused(obj: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        from_cloudevent(obj)
