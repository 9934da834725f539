"""Events: the envelope, its JSON codec, CloudEvents mapping and type patterns."""

from contexten.events.cloudevents import from_cloudevent, to_cloudevent
from contexten.events.codec import decode_event, decode_json, encode_event, encode_json
from contexten.events.envelope import Event, utcnow
from contexten.events.ids import new_id, uuid7
from contexten.events.patterns import Pattern, compile_pattern, matches

__all__ = [
    "Event",
    "Pattern",
    "compile_pattern",
    "decode_event",
    "decode_json",
    "encode_event",
    "encode_json",
    "from_cloudevent",
    "matches",
    "new_id",
    "to_cloudevent",
    "utcnow",
    "uuid7",
]
