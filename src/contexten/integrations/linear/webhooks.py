"""Linear webhooks: verify a delivery, check its timestamp, and turn it into an :class:`Event`.

Pure functions, no I/O.

Verification follows Linear's documentation: ``Linear-Signature`` is the hex HMAC-SHA256 of
the raw body under the webhook's signing secret (constant-time comparison); after the
signature, the body's ``webhookTimestamp`` (milliseconds since the epoch) must be within a
minute of now, which bounds replays. A body without it is refused.

Normalisation:

* type ``linear.<type in snake_case>.<action in the past tense>``: ``Issue`` + ``update`` is
  ``linear.issue.updated``, ``IssueLabel`` + ``create`` is ``linear.issue_label.created``;
* subject the issue identifier (``ENG-123``) when the entity is an issue or belongs to one
  (read from ``identifier``, else an issue's ``team.key`` and ``number``, else an issue url),
  else ``<type>/<id>``;
* actor the actor's name (else its id); delivery id ``Linear-Delivery``;
* data: the payload as Linear sent it (``action``, ``type``, ``data`` the entity,
  ``updatedFrom``, ``url``, ``actor``...) plus one key Contexten adds, ``changes``: for every
  field named in ``updatedFrom`` (``updatedAt`` aside), ``{"from": <previous value>, "to":
  <current value>}``, the shape GitHub uses for edits. The predicates in
  :mod:`contexten.integrations.linear.predicates` read it: ``changed("stateId")``,
  ``label_added("agent")``;
* correlation id: the issue's identifier (a comment's issue's), else one found in the title or
  description.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from contexten.events.envelope import Event
from contexten.exceptions import MalformedPayload, SignatureInvalid
from contexten.integrations.correlation import linear_identifiers
from contexten.integrations.signing import hmac_sha256_hex, matches_any

__all__ = [
    "CHANGES_KEY",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_TOLERANCE",
    "changes",
    "check_timestamp",
    "dedup_key",
    "event_type",
    "normalise",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "Linear-Signature"
DELIVERY_HEADER: Final = "Linear-Delivery"
EVENT_HEADER: Final = "Linear-Event"
TIMESTAMP_TOLERANCE: Final = 60.0
"""Seconds a delivery's ``webhookTimestamp`` may be away from now (either way)."""
CHANGES_KEY: Final = "changes"
"""The key of ``event.data`` where Contexten puts the changed fields."""

_ACTIONS: Final = {"create": "created", "update": "updated", "remove": "removed"}
_CAMEL_1: Final = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2: Final = re.compile(r"([a-z0-9])([A-Z])")
_UNSAFE: Final = re.compile(r"[^a-z0-9_]+")


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``Linear-Signature`` value Linear would send for ``body``."""
    return hmac_sha256_hex(secret, body)


def verify(body: bytes, signature: str | None, secrets: Sequence[bytes]) -> None:
    """Check ``signature`` (the ``Linear-Signature`` header) against the raw ``body``.

    Raises:
        SignatureInvalid: no secret is configured, the header is missing, or no secret
            matches.
    """
    if not secrets:
        raise SignatureInvalid("linear: no webhook secret configured")
    if not signature:
        raise SignatureInvalid(f"linear: {SIGNATURE_HEADER} missing")
    if not matches_any(secrets, signature, body):
        raise SignatureInvalid("linear: signature mismatch")


def check_timestamp(
    payload: Mapping[str, Any], now: datetime, tolerance: float = TIMESTAMP_TOLERANCE
) -> None:
    """Refuse a payload whose ``webhookTimestamp`` (ms) is missing or not near ``now``.

    Raises:
        SignatureInvalid: the timestamp is missing, not a number, or more than ``tolerance``
            seconds away from ``now``.
    """
    stamp = payload.get("webhookTimestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        raise SignatureInvalid("linear: webhookTimestamp missing")
    if abs(now.timestamp() - stamp / 1000.0) > tolerance:
        raise SignatureInvalid("linear: webhookTimestamp outside the tolerance")


def _snake(name: str) -> str:
    snake = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name.strip())).lower()
    return _UNSAFE.sub("_", snake).strip("_") or "_"


def _past(action: str) -> str:
    action = _snake(action)
    if action in _ACTIONS:
        return _ACTIONS[action]
    if action.endswith("ed"):
        return action
    return action + ("d" if action.endswith("e") else "ed")


def event_type(payload: Mapping[str, Any]) -> str:
    """``linear.<type>.<action>`` for a payload (see the module docstring).

    Raises:
        MalformedPayload: ``type`` or ``action`` is missing.
    """
    kind, action = payload.get("type"), payload.get("action")
    if not isinstance(kind, str) or not kind.strip():
        raise MalformedPayload("linear: payload has no type")
    if not isinstance(action, str) or not action.strip():
        raise MalformedPayload("linear: payload has no action")
    return f"linear.{_snake(kind)}.{_past(action)}"


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def changes(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from": previous, "to": current}}`` for the fields ``updatedFrom`` names."""
    previous = _dict(payload.get("updatedFrom"))
    entity = _dict(payload.get("data"))
    return {
        name: {"from": old, "to": entity.get(name)}
        for name, old in previous.items()
        if name != "updatedAt"
    }


_ISSUE_URL: Final = re.compile(
    r"^https://linear\.app/[^/?#]+/issue/([A-Za-z][A-Za-z0-9]*-[0-9]+)(?:[/?#]|$)"
)


def _identifier_in_url(value: Any) -> str | None:
    """The identifier in an issue URL (``https://linear.app/<org>/issue/ENG-1/<slug>``)."""
    if not isinstance(value, str):
        return None
    match = _ISSUE_URL.match(value)
    return match.group(1).upper() if match else None


_IDENTIFIER: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*-[0-9]+$")


def _team_number(payload: Mapping[str, Any]) -> str | None:
    """``<team key>-<number>`` for an issue payload that carries both but no identifier.

    Linear's identifier is exactly that; older payloads (and ``remove`` deliveries, which
    have no url) carry only ``number`` and ``team.key``.
    """
    if payload.get("type") != "Issue":
        return None
    entity = _dict(payload.get("data"))
    key = _str(_dict(entity.get("team")).get("key"))
    number = entity.get("number")
    if key is None or isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return None
    ident = f"{key}-{number}"
    return ident if _IDENTIFIER.match(ident) else None


def _identifier(payload: Mapping[str, Any]) -> str | None:
    entity = _dict(payload.get("data"))
    issue = _dict(entity.get("issue"))
    return (
        _str(entity.get("identifier"))
        or _str(issue.get("identifier"))
        or _team_number(payload)
        # Older and partial deliveries (a comment naming only its issue's id, say) still link
        # the issue: the delivery's url, the entity's, or its issue's.
        or _identifier_in_url(entity.get("url"))
        or _identifier_in_url(issue.get("url"))
        or _identifier_in_url(payload.get("url"))
    )


def _subject(payload: Mapping[str, Any]) -> str | None:
    ident = _identifier(payload)
    if ident is not None:
        return ident
    entity_id = _dict(payload.get("data")).get("id")
    kind = payload.get("type")
    if isinstance(entity_id, str) and entity_id and isinstance(kind, str):
        return f"{_snake(kind)}/{entity_id}"
    return None


def correlation_id(
    payload: Mapping[str, Any], *, team_keys: Collection[str] | None = None
) -> str | None:
    """The work item: the issue's identifier, else one named in the title or description."""
    ident = _identifier(payload)
    if ident is not None:
        return ident
    entity = _dict(payload.get("data"))
    for text in (entity.get("title"), entity.get("description"), entity.get("body")):
        if isinstance(text, str) and (found := linear_identifiers(text, team_keys=team_keys)):
            return found[0]
    return None


def dedup_key(delivery_id: str | None, body: bytes) -> str:
    """``linear:<Linear-Delivery>``; without the header, a digest of the signed body."""
    if delivery_id:
        return f"linear:{delivery_id}"
    return "linear:sha256:" + hashlib.sha256(body).hexdigest()


def normalise(
    payload: dict[str, Any],
    *,
    delivery_id: str | None = None,
    time: datetime | None = None,
    team_keys: Collection[str] | None = None,
) -> Event:
    """The :class:`Event` for a verified Linear payload (see the module docstring).

    Raises:
        MalformedPayload: the payload has no ``type`` or ``action``.
    """
    actor = _dict(payload.get("actor"))
    data = dict(payload)
    data[CHANGES_KEY] = changes(payload)
    fields: dict[str, Any] = {}
    if time is not None:
        fields["time"] = time
    return Event(
        type=event_type(payload),
        source="linear",
        subject=_subject(payload),
        actor=_str(actor.get("name")) or _str(actor.get("id")),
        delivery_id=delivery_id,
        correlation_id=correlation_id(payload, team_keys=team_keys),
        data=data,
        **fields,
    )
