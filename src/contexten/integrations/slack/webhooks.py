"""Slack requests: verify the signing secret, and turn Events API, interactivity and slash-command
requests into :class:`Event` objects.

Pure functions, no I/O.

Verification follows Slack's documentation: ``X-Slack-Signature`` is ``v0=`` and the hex
HMAC-SHA256 of ``v0:<X-Slack-Request-Timestamp>:<raw body>`` under the signing secret,
compared in constant time; the timestamp must be within five minutes of now, either way.

Normalisation (see :func:`classify` for how a request is recognised):

* Events API (JSON): ``slack.<event.type>`` (``slack.app_mention``, ``slack.message``); a
  ``message`` whose subtype is ``message_changed`` or ``message_deleted`` (an edit, a deletion)
  is ``slack.message_changed`` / ``slack.message_deleted``, Slack's own names for them, so a
  handler for new messages does not get edits and deletions; data the
  whole envelope (``event``, ``team_id``, ``event_id``...); dedup key ``slack:<event_id>``, so
  Slack's retries (``X-Slack-Retry-Num``) of a delivery that was stored are recognised, and
  one whose first attempt was lost is stored. ``url_verification`` is answered with its
  challenge and not stored.
* Interactivity (a form with one ``payload`` field of JSON): ``slack.<payload.type>``
  (``slack.block_actions``, ``slack.view_submission``); data the payload.
* Slash commands (a form): ``slack.command``; data the form's fields.

Interactivity and commands carry no event id: their key is ``slack:trigger:<trigger_id>``
(one per user gesture), or a digest of the signed body when there is none.

Subject: the channel (``C123``), else the view's callback id, else the team. Correlation id:
a Linear identifier in the message text, else the thread (``slack:<channel>:<thread_ts>``;
a message outside a thread names the thread it would start; an edit or a deletion, the thread
of the message it changes). The actor of an edit is its editor; a deletion has none.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from contexten.events.envelope import Event
from contexten.exceptions import MalformedPayload, SignatureInvalid
from contexten.integrations.correlation import linear_identifiers, slack_thread_key
from contexten.integrations.signing import hmac_sha256_hex, matches_any

__all__ = [
    "MESSAGE_SUBTYPE_TYPES",
    "RETRY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TIMESTAMP_TOLERANCE",
    "SlackRequest",
    "classify",
    "dedup_key",
    "is_ssl_check",
    "normalise",
    "parse_form",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Slack-Signature"
TIMESTAMP_HEADER: Final = "X-Slack-Request-Timestamp"
RETRY_HEADER: Final = "X-Slack-Retry-Num"
TIMESTAMP_TOLERANCE: Final = 300.0
"""Seconds a request's timestamp may be away from now (either way)."""

_PREFIX: Final = "v0="
_UNSAFE_SEGMENT: Final = re.compile(r"[^a-z0-9_\-]+")
_MAX_TIMESTAMP_DIGITS: Final = 12
_MAX_FORM_FIELDS: Final = 100

Kind = Literal["events_api", "url_verification", "interactivity", "command"]

MESSAGE_SUBTYPE_TYPES: Final = frozenset({"message_changed", "message_deleted"})
"""``message`` subtypes that are not new messages, stored under their own type
(``slack.message_changed``, ``slack.message_deleted``)."""


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value Slack would send for ``body`` at ``timestamp``."""
    return _PREFIX + hmac_sha256_hex(secret, b"v0:", timestamp.encode("ascii"), b":", body)


def verify(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    secrets: Sequence[bytes],
    now: datetime,
    tolerance: float = TIMESTAMP_TOLERANCE,
) -> None:
    """Check a request's signature and timestamp headers against the raw ``body``.

    Raises:
        SignatureInvalid: no secret is configured; a header is missing or malformed; the
            timestamp is more than ``tolerance`` seconds from ``now``; or no secret matches.
    """
    if not secrets:
        raise SignatureInvalid("slack: no signing secret configured")
    if not signature or not timestamp:
        raise SignatureInvalid("slack: signature or timestamp header missing")
    timestamp = timestamp.strip()
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureInvalid(f"slack: {TIMESTAMP_HEADER} is not a Unix time")
    if abs(now.timestamp() - int(timestamp)) > tolerance:
        raise SignatureInvalid(f"slack: {TIMESTAMP_HEADER} outside the tolerance")
    if not signature.startswith(_PREFIX):
        raise SignatureInvalid(f"slack: {SIGNATURE_HEADER} is not v0=<hex>")
    if not matches_any(secrets, signature[len(_PREFIX) :], b"v0:", timestamp.encode(), b":", body):
        raise SignatureInvalid("slack: signature mismatch")


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a repeated
    field wins).

    Raises:
        MalformedPayload: the body is not UTF-8, not a form, or has too many fields.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedPayload(f"slack: not a valid form body ({type(e).__name__})") from None
    return dict(pairs)


@dataclass(frozen=True, slots=True)
class SlackRequest:
    """A verified Slack request, recognised.

    Attributes:
        kind: which of Slack's request families it is.
        payload: the JSON object (Events API, interactivity) or the form fields (command).
    """

    kind: Kind
    payload: dict[str, Any]


def is_ssl_check(content_type: str, body: bytes) -> bool:
    """Whether the request is Slack's ``ssl_check`` probe of a command/interactivity URL.

    Slack posts ``ssl_check=1`` (a form, with the app's verification token) to check the
    certificate and expects a 200; there is nothing to store. Bolt answers it before
    verifying the signature, and so does the ingress: the answer is an empty 200 that
    reveals nothing and stores nothing.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded" or len(body) > 4096:
        return False
    try:
        form = parse_form(body)
    except MalformedPayload:
        return False
    return form.get("ssl_check") == "1" and "payload" not in form and "command" not in form


def classify(
    content_type: str, body: bytes, loads: Callable[[bytes], dict[str, Any]]
) -> SlackRequest:
    """Recognise a verified request from its content type and body.

    Args:
        content_type: the ``Content-Type`` header.
        body: the raw body.
        loads: the JSON parser to use (``bytes -> dict``, refusing anything but an object);
            the ingress passes its hostile-input-safe one.

    Raises:
        MalformedPayload: the body fits none of Slack's request families.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        form = parse_form(body)
        if "payload" in form:
            payload = loads(form["payload"].encode("utf-8"))
            if not isinstance(payload.get("type"), str):
                raise MalformedPayload("slack: interactivity payload has no type")
            return SlackRequest("interactivity", payload)
        if isinstance(form.get("command"), str) and form["command"]:
            return SlackRequest("command", dict(form))
        raise MalformedPayload("slack: form is neither interactivity nor a slash command")
    payload = loads(body)
    kind = payload.get("type")
    if kind == "url_verification":
        if not isinstance(payload.get("challenge"), str):
            raise MalformedPayload("slack: url_verification without a challenge")
        return SlackRequest("url_verification", payload)
    if not isinstance(kind, str) or not kind:
        raise MalformedPayload("slack: Events API payload has no type")
    if kind == "event_callback" and not isinstance(payload.get("event"), Mapping):
        raise MalformedPayload("slack: event_callback without an event")
    return SlackRequest("events_api", payload)


def _segment(value: str) -> str:
    segment = _UNSAFE_SEGMENT.sub("_", value.strip().lower())
    if not segment or segment.startswith("-"):
        segment = "_" + segment
    return segment


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def event_type(request: SlackRequest) -> str:
    """The event type of a recognised request (see the module docstring)."""
    payload = request.payload
    if request.kind == "command":
        return "slack.command"
    if request.kind == "interactivity":
        return f"slack.{_segment(str(payload['type']))}"
    if payload.get("type") == "event_callback":
        event = _dict(payload.get("event"))
        inner = _str(event.get("type"))
        if inner is None:
            raise MalformedPayload("slack: event has no type")
        subtype = event.get("subtype")
        if inner == "message" and subtype in MESSAGE_SUBTYPE_TYPES:
            return f"slack.{subtype}"
        return f"slack.{_segment(inner)}"
    return f"slack.{_segment(str(payload.get('type')))}"


def dedup_key(request: SlackRequest, body: bytes) -> str:
    """``slack:<event_id>``, ``slack:trigger:<trigger_id>``, or a digest of the body."""
    payload = request.payload
    event_id = _str(payload.get("event_id"))
    if request.kind == "events_api" and event_id is not None:
        return f"slack:{event_id}"
    trigger = _str(payload.get("trigger_id"))
    if trigger is not None:
        return f"slack:trigger:{trigger}"
    return "slack:sha256:" + hashlib.sha256(body).hexdigest()


def _message_parts(request: SlackRequest) -> tuple[str | None, str | None, str | None]:
    """(channel, thread timestamp, text) of the message the request is about, if any."""
    payload = request.payload
    if request.kind == "command":
        return _str(payload.get("channel_id")), None, _str(payload.get("text"))
    if request.kind == "interactivity":
        container = _dict(payload.get("container"))
        # Block Kit puts the message in ``message``; legacy attachment actions
        # (``interactive_message``) in ``original_message``, with ``message_ts`` beside it.
        message = _dict(payload.get("message")) or _dict(payload.get("original_message"))
        channel = _str(_dict(payload.get("channel")).get("id")) or _str(container.get("channel_id"))
        thread = (
            _str(container.get("thread_ts"))
            or _str(message.get("thread_ts"))
            or _str(container.get("message_ts"))
            or _str(message.get("ts"))
            or _str(payload.get("message_ts"))
        )
        return channel, thread, _str(message.get("text"))
    event = _dict(payload.get("event"))
    item = _dict(event.get("item"))  # reactions point at an item
    message = _dict(event.get("message"))  # message_changed carries the message
    previous = _dict(event.get("previous_message"))  # ...and message_deleted the old one
    channel = (
        _str(event.get("channel"))
        or _str(item.get("channel"))
        or _str(_dict(event.get("channel")).get("id"))  # channel_created and friends
    )
    # An edit or a deletion belongs to the thread of the message it changes, not to a
    # thread its own (change event) ``ts`` would start.
    thread = (
        _str(event.get("thread_ts"))
        or _str(message.get("thread_ts"))
        or _str(message.get("ts"))
        or _str(previous.get("thread_ts"))
        or _str(previous.get("ts"))
        or _str(event.get("deleted_ts"))
        or _str(event.get("ts"))
        or _str(item.get("ts"))
    )
    text = _str(event.get("text")) or _str(message.get("text")) or _str(previous.get("text"))
    return channel, thread, text


def _subject(request: SlackRequest, channel: str | None) -> str | None:
    if channel is not None:
        return channel
    payload = request.payload
    view = _dict(payload.get("view"))
    callback = _str(view.get("callback_id")) or _str(payload.get("callback_id"))
    if callback is not None:
        return callback
    return _str(payload.get("team_id")) or _str(_dict(payload.get("team")).get("id"))


def _actor(request: SlackRequest) -> str | None:
    payload = request.payload
    if request.kind == "command":
        return _str(payload.get("user_id"))
    if request.kind == "interactivity":
        return _str(_dict(payload.get("user")).get("id"))
    event = _dict(payload.get("event"))
    user = event.get("user")
    if isinstance(user, Mapping):
        return _str(user.get("id"))
    if user is None and event.get("subtype") == "message_changed":
        # The edit names its author on the edited message (Slack does not say who deletes).
        message = _dict(event.get("message"))
        return _str(_dict(message.get("edited")).get("user")) or _str(message.get("user"))
    return _str(user) or _str(event.get("bot_id"))


def normalise(
    request: SlackRequest,
    *,
    time: datetime | None = None,
    team_keys: Collection[str] | None = None,
) -> Event:
    """The :class:`Event` for a recognised request (not for ``url_verification``).

    Raises:
        MalformedPayload: the request is a ``url_verification`` (answer it, do not store it)
            or its event has no type.
    """
    if request.kind == "url_verification":
        raise MalformedPayload("slack: url_verification is answered, not stored")
    channel, thread, text = _message_parts(request)
    correlation = next(iter(linear_identifiers(text, team_keys=team_keys)), None)
    if correlation is None and channel is not None and thread is not None:
        correlation = slack_thread_key(channel, thread)
    fields: dict[str, Any] = {}
    if time is not None:
        fields["time"] = time
    return Event(
        type=event_type(request),
        source="slack",
        subject=_subject(request, channel),
        actor=_actor(request),
        delivery_id=_str(request.payload.get("event_id")),
        correlation_id=correlation,
        data=dict(request.payload),
        **fields,
    )
