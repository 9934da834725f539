"""From a raw webhook request to what to store: one receiver per platform.

A receiver takes the request's headers and its raw body (already read under the cap), and
runs the platform's checks in the order that keeps hostile input cheap: verify the signature
on the raw bytes (nothing is parsed before it holds), parse the JSON with the
hostile-input-safe parser, apply post-signature checks (Linear's timestamp), normalise. It
returns an :class:`Accepted` (the event and its dedup key, or an immediate reply) or raises an
:class:`~contexten.exceptions.IngressError` that carries the HTTP status.

Receivers are synchronous and do no I/O, so a large body's verification and parsing can run
in a worker thread while the event loop serves other requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from contexten.events.envelope import Event
from contexten.exceptions import MalformedPayload
from contexten.ingress.config import IngressConfig, Platform
from contexten.ingress.jsonsafe import loads_object
from contexten.integrations.github import webhooks as github
from contexten.integrations.linear import webhooks as linear
from contexten.integrations.slack import webhooks as slack

__all__ = [
    "RECEIVERS",
    "SIGNATURE_HEADERS",
    "Accepted",
    "Receiver",
    "receive_github",
    "receive_linear",
    "receive_slack",
]

_MAX_ID: Final = 200  # longest delivery id accepted from a header


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified request, ready to store (or to answer without storing).

    Attributes:
        event: the normalised event, or None when there is nothing to store.
        dedup_key: the key committed with the event.
        reply: a JSON body to answer at once instead of storing (Slack's url_verification).
    """

    event: Event | None
    dedup_key: str | None
    reply: dict[str, Any] | None = None


Receiver = Callable[[Mapping[str, str], bytes, IngressConfig], Accepted]
"""``(headers, raw body, config) -> Accepted``; headers are looked up by lower-case name."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name.lower())
    if value is None:
        value = headers.get(name)
    return value


def _delivery_id(headers: Mapping[str, str], name: str) -> str | None:
    value = _header(headers, name)
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > _MAX_ID or not value.isprintable() or not value.isascii():
        raise MalformedPayload(f"{name} is not a delivery id")
    return value


def receive_github(headers: Mapping[str, str], body: bytes, config: IngressConfig) -> Accepted:
    """Verify, parse and normalise a GitHub delivery; dedup as in :func:`github.dedup_key`."""
    github.verify(body, _header(headers, github.SIGNATURE_HEADER), config.github_secrets)
    event_name = (_header(headers, github.EVENT_HEADER) or "").strip()
    delivery = _delivery_id(headers, github.DELIVERY_HEADER)
    if not event_name:
        raise MalformedPayload(f"github: {github.EVENT_HEADER} missing")
    if delivery is None:
        raise MalformedPayload(f"github: {github.DELIVERY_HEADER} missing")
    payload = loads_object(body)
    event = github.normalise(
        event_name,
        payload,
        delivery_id=delivery,
        time=config.clock.now(),
        team_keys=config.team_keys,
    )
    return Accepted(event, github.dedup_key(event_name, delivery, payload))


def receive_linear(headers: Mapping[str, str], body: bytes, config: IngressConfig) -> Accepted:
    """Verify, parse, check the timestamp of and normalise a Linear delivery."""
    linear.verify(body, _header(headers, linear.SIGNATURE_HEADER), config.linear_secrets)
    payload = loads_object(body)
    linear.check_timestamp(payload, config.clock.now(), config.linear_tolerance)
    delivery = _delivery_id(headers, linear.DELIVERY_HEADER)
    event = linear.normalise(
        payload, delivery_id=delivery, time=config.clock.now(), team_keys=config.team_keys
    )
    return Accepted(event, linear.dedup_key(delivery, body))


def receive_slack(headers: Mapping[str, str], body: bytes, config: IngressConfig) -> Accepted:
    """Verify and recognise a Slack request; answer url_verification, normalise the rest.

    Retries (``X-Slack-Retry-Num``) are not dropped: they go through the same dedup as the
    first attempt, so a retry whose first attempt was never stored is stored once.
    """
    if slack.is_ssl_check(_header(headers, "content-type") or "", body):
        return Accepted(None, None, reply={})
    now = config.clock.now()
    slack.verify(
        body,
        _header(headers, slack.SIGNATURE_HEADER),
        _header(headers, slack.TIMESTAMP_HEADER),
        config.slack_secrets,
        now,
        config.slack_tolerance,
    )
    request = slack.classify(_header(headers, "content-type") or "", body, loads_object)
    if request.kind == "url_verification":
        return Accepted(None, None, reply={"challenge": request.payload["challenge"]})
    event = slack.normalise(request, time=now, team_keys=config.team_keys)
    return Accepted(event, slack.dedup_key(request, body))


RECEIVERS: Final[Mapping[Platform, Receiver]] = {
    "github": receive_github,
    "linear": receive_linear,
    "slack": receive_slack,
}

SIGNATURE_HEADERS: Final[Mapping[Platform, str]] = {
    "github": github.SIGNATURE_HEADER,
    "linear": linear.SIGNATURE_HEADER,
    "slack": slack.SIGNATURE_HEADER,
}
"""The header carrying each platform's signature: without it a request is refused (401)
before its body is read."""
