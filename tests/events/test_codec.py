"""The JSON codec: lossless round trips, the envelope's field names, clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given

from contexten.events import Event, decode_event, decode_json, encode_event, encode_json
from contexten.exceptions import InvalidEvent

from .strategies import events, json_values

FIELDS = {
    "type",
    "source",
    "data",
    "subject",
    "id",
    "time",
    "correlation_id",
    "causation_id",
    "delivery_id",
    "actor",
    "traceparent",
}


@given(events)
def test_event_round_trips(event: Event) -> None:
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.time == event.time
    assert decoded.time.tzinfo is UTC


@given(events)
def test_json_form_uses_the_envelope_field_names(event: Event) -> None:
    obj = json.loads(encode_event(event))
    assert {"type", "id", "time"} <= set(obj) <= FIELDS
    assert obj["type"] == event.type
    assert obj.get("data", {}) == event.data
    assert datetime.fromisoformat(obj["time"].replace("Z", "+00:00")) == event.time


@given(json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    assert decode_json(encode_json(value)) == value


def test_time_keeps_its_microseconds() -> None:
    event = Event(type="a.b", time=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    assert b'"2024-05-06T07:08:09.123456Z"' in encode_event(event)
    assert decode_event(encode_event(event)).time.microsecond == 123456


def test_decodes_the_standard_librarys_json() -> None:
    event = Event(type="linear.issue.updated", source="linear", data={"id": "LIN-1", "n": 1.5})
    text = json.dumps(json.loads(encode_event(event)))
    assert decode_event(text) == event


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "malformed event JSON"),
        (b"[]", "Expected `object`"),
        (b'{"source": "x"}', "missing required field `type`"),
        (b'{"type": "a", "data": []}', r"\$\.data"),
        (b'{"type": "Not A Type"}', "dot-separated lower-case"),
        (b'{"type": "a", "source": ""}', "source must be a non-empty"),
        (b'{"type": "a", "time": "2024-01-01T00:00:00"}', "timezone-aware"),
        (b'{"type": "a", "time": "yesterday"}', "time"),
    ],
)
def test_bad_json_is_an_invalid_event(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        decode_event(raw)


def test_unencodable_data_is_an_invalid_event() -> None:
    event = Event(type="a", data={"when": object()})
    with pytest.raises(InvalidEvent, match=event.id):
        encode_event(event)
