"""JSON encoding of events: lossless, and fast (msgspec; see ``bench/codec.py``).

``decode_event(encode_event(e)) == e`` for every event whose data is JSON (strings, finite
floats, integers within 64 bits, booleans, null, lists and string-keyed objects); the time
keeps its microseconds.
"""

from __future__ import annotations

from typing import Any

import msgspec

from contexten.events.envelope import Event
from contexten.exceptions import InvalidEvent

__all__ = ["decode_event", "decode_json", "encode_event", "encode_json"]

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
_any_decoder = msgspec.json.Decoder()


def encode_event(event: Event) -> bytes:
    """Return the JSON form of ``event`` (field names as on the envelope)."""
    try:
        return _encoder.encode(event)
    except (TypeError, OverflowError) as e:
        raise InvalidEvent(f"event {event.id} is not JSON-encodable: {e}") from e


def decode_event(raw: bytes | str) -> Event:
    """Parse the JSON form of an event, checking every field."""
    try:
        return _event_decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise InvalidEvent(f"not a valid event: {e}") from e
    except msgspec.DecodeError as e:
        raise InvalidEvent(f"malformed event JSON: {e}") from e


def encode_json(value: Any) -> bytes:
    """Encode any JSON value (used for payloads and records beside events)."""
    return _encoder.encode(value)


def decode_json(raw: bytes | str) -> Any:
    """Decode any JSON value."""
    return _any_decoder.decode(raw)
