"""Mapping between :class:`Event` and CloudEvents 1.0 structured JSON.

CloudEvents extension attribute names are lower-case letters and digits only, so the
envelope's ``correlation_id`` travels as ``correlationid`` and so on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from contexten.events.envelope import Event
from contexten.exceptions import InvalidEvent

__all__ = ["EARLIEST", "LATEST", "clamp_time", "from_cloudevent", "parse_time", "to_cloudevent"]

SPEC_VERSION: Final = "1.0"
_EXTENSIONS: Final = {
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "delivery_id": "deliveryid",
    "actor": "actor",
    "traceparent": "traceparent",
}


def to_cloudevent(event: Event) -> dict[str, Any]:
    """Return ``event`` as a CloudEvents 1.0 structured-mode JSON object (a dict)."""
    out: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": event.data,
    }
    if event.subject is not None:
        out["subject"] = event.subject
    for field, attr in _EXTENSIONS.items():
        value = getattr(event, field)
        if value is not None:
            out[attr] = value
    return out


EARLIEST: Final = datetime(1, 1, 2, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)


def clamp_time(value: datetime) -> datetime:
    """An aware time in UTC, clamped to [:data:`EARLIEST`, :data:`LATEST`] (a day inside
    what a datetime holds, so a bound plus or minus a little never overflows): for query
    bounds, where "before everything" is all that year 1 can mean."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return EARLIEST if value.year < 5000 else LATEST
    return min(max(utc, EARLIEST), LATEST)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset, either case) as an aware datetime in UTC.

    Raises:
        InvalidEvent: not RFC 3339, no offset, or outside what a datetime holds in UTC.
    """
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("no UTC offset")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as e:
        raise InvalidEvent(f"time {text[:64]!r} is not an RFC 3339 time with an offset") from e


def from_cloudevent(obj: dict[str, Any]) -> Event:
    """Build an :class:`Event` from a CloudEvents 1.0 structured-mode JSON object."""
    if not isinstance(obj, dict):
        raise InvalidEvent("a CloudEvent must be a JSON object")
    if obj.get("specversion") != SPEC_VERSION:
        raise InvalidEvent(f"unsupported CloudEvents specversion {obj.get('specversion')!r}")
    for required in ("id", "source", "type"):
        if not isinstance(obj.get(required), str) or not obj[required]:
            raise InvalidEvent(f"CloudEvent attribute {required!r} is required")
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidEvent("CloudEvent data must be a JSON object for Contexten")
    fields: dict[str, Any] = {
        "id": obj["id"],
        "source": obj["source"],
        "type": obj["type"],
        "subject": obj.get("subject"),
        "data": data,
    }
    if obj.get("time") is not None:
        fields["time"] = parse_time(str(obj["time"]))
    for field, attr in _EXTENSIONS.items():
        if obj.get(attr) is not None:
            fields[field] = str(obj[attr])
    return Event(**fields)
