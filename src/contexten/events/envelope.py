"""The event envelope: one immutable shape for everything that happens.

The fields follow CloudEvents 1.0 (``id``, ``source``, ``type``, ``subject``, ``time``,
``data``) plus Contexten's extensions: ``correlation_id`` ties a work item together across
platforms, ``causation_id`` names the event that caused this one, ``delivery_id`` is the
platform's delivery, ``actor`` who did it, ``traceparent`` the W3C trace context.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from contexten.events.ids import new_id
from contexten.exceptions import InvalidEvent

__all__ = ["Event", "utcnow"]

_TYPE_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-]*(\.[a-z0-9_][a-z0-9_\-]*)*$")
_VALID_TYPES: set[str] = set()
"""Types that passed the check; a process sees few distinct types, so most checks are a
set lookup instead of a regular-expression match."""
_VALID_TYPES_LIMIT = 10_000


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An immutable fact: something happened on a platform or inside Contexten.

    Build one with keyword fields; ``id`` (a UUIDv7) and ``time`` (now, UTC) default::

        Event(type="github.pull_request.opened", source="github", data={"number": 1})

    Type names are ``{platform}.{resource}.{action}`` in snake_case, past tense.

    ``data`` is a plain dict for speed; treat it as read-only (the envelope is frozen, and the
    stored copy is what every consumer sees).
    """

    type: str
    source: str = "contexten"
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    subject: str | None = None
    id: str = msgspec.field(default_factory=new_id)
    time: datetime = msgspec.field(default_factory=utcnow)
    correlation_id: str | None = None
    causation_id: str | None = None
    delivery_id: str | None = None
    actor: str | None = None
    traceparent: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _VALID_TYPES:
            if not isinstance(self.type, str) or not _TYPE_RE.match(self.type):
                raise InvalidEvent(
                    f"event type {self.type!r} must be dot-separated lower-case segments "
                    "(e.g. 'github.pull_request.opened')"
                )
            if len(_VALID_TYPES) < _VALID_TYPES_LIMIT:
                _VALID_TYPES.add(self.type)
        if not self.source:
            raise InvalidEvent("event source must be a non-empty string")
        if not self.id:
            raise InvalidEvent("event id must be a non-empty string")
        if not isinstance(self.data, dict):
            raise InvalidEvent(f"event data must be a JSON object, not {type(self.data).__name__}")
        if self.time.tzinfo is None:
            raise InvalidEvent("event time must be timezone-aware")
        if self.time.utcoffset():
            msgspec.structs.force_setattr(self, "time", self.time.astimezone(UTC))

    @property
    def ordering_key(self) -> str | None:
        """The default key events are ordered by: the correlation id, else the subject."""
        return self.correlation_id or self.subject

    def replace(self, **changes: Any) -> Event:
        """Return a copy with ``changes`` applied (the envelope itself never changes)."""
        return msgspec.structs.replace(self, **changes)

    def caused(self, type: str, data: dict[str, Any] | None = None, **fields: Any) -> Event:
        """Return a follow-up event caused by this one.

        It inherits ``correlation_id`` (and ``subject`` unless given) and sets
        ``causation_id`` to this event's id, so a chain of effects can be traced back.
        """
        fields.setdefault("correlation_id", self.correlation_id)
        fields.setdefault("subject", self.subject)
        fields.setdefault("traceparent", self.traceparent)
        fields.setdefault("source", self.source)
        return Event(type=type, data=data or {}, causation_id=self.id, **fields)
