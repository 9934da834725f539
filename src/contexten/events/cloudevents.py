"""Mapping between :class:`Event` and CloudEvents 1.0 structured JSON.

CloudEvents extension attribute names are lower-case letters and digits only, so the
envelope's ``correlation_id`` travels as ``correlationid`` and so on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from contexten.events.envelope import Event
from contexten.exceptions import InvalidEvent

__all__ = ["from_cloudevent", "to_cloudevent"]

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
        try:
            fields["time"] = datetime.fromisoformat(str(obj["time"]).replace("Z", "+00:00"))
        except ValueError as e:
            raise InvalidEvent(f"CloudEvent time is not RFC 3339: {obj['time']!r}") from e
    for field, attr in _EXTENSIONS.items():
        if obj.get(attr) is not None:
            fields[field] = str(obj[attr])
    return Event(**fields)
