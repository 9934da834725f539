"""What a relayed event looks like outside: its subject and its message (broker-neutral).

**Subjects.** An event of type ``github.pull_request.opened`` goes to
``contexten.github.pull_request.opened`` (``{prefix}.{type}``; the prefix is configurable).
Event types are dot-separated segments of ``a-z``, ``0-9``, ``_`` and ``-``
(:class:`~contexten.events.envelope.Event` refuses anything else), and every such segment is
a valid NATS subject token (tokens may not be empty or hold whitespace, ``.``, ``*`` or
``>``), so the mapping is the identity after the prefix: nothing is escaped or rewritten,
and a consumer can subscribe with the same patterns handlers use (``contexten.github.>``,
``contexten.linear.*.created``). A type that would not be a valid subject cannot be stored;
:func:`subject_for` still checks, and refuses (non-retryable, so the event is dead-lettered
with the reason) rather than rename it.

**Message.** The body is the event as a CloudEvents 1.0 JSON object in *structured mode*
(``Content-Type: application/cloudevents+json``; see :mod:`contexten.events.cloudevents`:
``id``, ``source``, ``type``, ``subject``, ``time``, ``data`` and the extensions
``correlationid``, ``causationid``, ``deliveryid``, ``actor``, ``traceparent``). Its ``data``
goes through :func:`~contexten.observability.redaction.redact_secrets` first, the rule the
dashboard uses: fields named like credentials (a Slack payload's verification ``token``...)
are blanked and credentials inside URLs or ``name=value`` text masked, so nothing that could
authenticate leaves through the relay. Each message also carries ``Contexten-Position``, the
event's position in the global log.
"""

from __future__ import annotations

import re
from typing import Final

from contexten.events.cloudevents import to_cloudevent
from contexten.events.codec import encode_json
from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError, InvalidEvent
from contexten.observability.redaction import redact_secrets

__all__ = [
    "CONTENT_TYPE",
    "POSITION_HEADER",
    "SUBJECT_PREFIX",
    "check_subject_prefix",
    "encode_message",
    "subject_for",
]

CONTENT_TYPE: Final = "application/cloudevents+json"
"""The ``Content-Type`` of a relayed message: a structured-mode CloudEvent."""

POSITION_HEADER: Final = "Contexten-Position"
"""The header carrying the event's position in the global log."""

SUBJECT_PREFIX: Final = "contexten"
"""The default first token(s) of every relayed subject."""

_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_subject_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is one or more plain subject tokens (``contexten``,
    ``acme.contexten``): letters, digits, ``_`` and ``-``, no wildcard, no empty token.

    Raises:
        ConfigurationError: it is not.
    """
    if not isinstance(prefix, str) or not all(_TOKEN_RE.match(t) for t in prefix.split(".")):
        raise ConfigurationError(
            f"subject prefix {prefix!r} must be dot-separated tokens of letters, digits, "
            "'_' and '-' (no wildcards, no empty token)"
        )
    return prefix


def subject_for(event_type: str, prefix: str = SUBJECT_PREFIX) -> str:
    """The subject an event of type ``event_type`` is relayed to: ``{prefix}.{event_type}``.

    Raises:
        InvalidEvent: a segment of the type is not a valid subject token (impossible for a
            stored event; refused rather than rewritten).
    """
    for token in event_type.split("."):
        if not _TOKEN_RE.match(token):
            raise InvalidEvent(
                f"event type {event_type!r} does not map to a NATS subject (segment {token!r})"
            )
    return f"{prefix}.{event_type}"


def encode_message(event: Event, position: int) -> tuple[bytes, dict[str, str]]:
    """The relayed message of ``event`` (stored at ``position``): the body, a CloudEvents JSON
    object with its data's secrets redacted, and the broker-neutral headers."""
    cloudevent = to_cloudevent(event)
    cloudevent["data"] = redact_secrets(event.data)
    headers = {"Content-Type": CONTENT_TYPE, POSITION_HEADER: str(position)}
    return encode_json(cloudevent), headers
