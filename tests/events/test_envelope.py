"""The event envelope: defaults, validation, immutability, follow-up events, ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from contexten.events import Event, new_id, uuid7
from contexten.exceptions import InvalidEvent


def test_defaults() -> None:
    before = datetime.now(UTC)
    event = Event(type="github.push", data={"ref": "main"})
    assert event.source == "contexten"
    assert before <= event.time <= datetime.now(UTC)
    assert uuid.UUID(event.id).version == 7
    assert Event(type="a").data == {}
    assert Event(type="a").id != Event(type="a").id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": ""}, "event type"),
        ({"type": "GitHub.push"}, "event type"),
        ({"type": "github..push"}, "event type"),
        ({"type": "github.push "}, "event type"),
        ({"type": "a", "source": ""}, "source"),
        ({"type": "a", "id": ""}, "id"),
        ({"type": "a", "data": ["not", "a", "dict"]}, "JSON object"),
        ({"type": "a", "time": datetime(2024, 1, 1)}, "timezone-aware"),
    ],
)
def test_invalid_envelopes_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        Event(**fields)  # type: ignore[arg-type]


def test_time_is_normalised_to_utc() -> None:
    local = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = Event(type="a", time=local)
    assert event.time == local
    assert event.time.utcoffset() == timedelta(0)
    assert event.time.hour == 10


def test_envelope_is_immutable() -> None:
    event = Event(type="a")
    with pytest.raises(AttributeError):
        event.type = "b"  # type: ignore[misc]


def test_replace_validates_and_keeps_the_original() -> None:
    event = Event(type="a.b", data={"n": 1})
    changed = event.replace(subject="x")
    assert (changed.subject, event.subject, changed.id) == ("x", None, event.id)
    with pytest.raises(InvalidEvent):
        event.replace(type="Not Valid")


def test_caused_event_inherits_the_chain() -> None:
    cause = Event(
        type="github.pull_request.opened",
        source="github",
        subject="acme/app#1",
        correlation_id="LIN-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    effect = cause.caused("contexten.review.requested", {"who": "bot"})
    assert effect.causation_id == cause.id
    assert (effect.correlation_id, effect.subject, effect.source) == (
        "LIN-1",
        "acme/app#1",
        "github",
    )
    assert effect.traceparent == cause.traceparent
    assert effect.data == {"who": "bot"}
    assert cause.caused("x.y", subject="other").subject == "other"


def test_ordering_key() -> None:
    assert Event(type="a", correlation_id="c", subject="s").ordering_key == "c"
    assert Event(type="a", subject="s").ordering_key == "s"
    assert Event(type="a").ordering_key is None


def test_ids_are_time_ordered_uuid7() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    ms = ids[-1].int >> 80
    assert abs(ms - datetime.now(UTC).timestamp() * 1000) < 60_000
    assert isinstance(new_id(), str)
