"""``contexten simulate``: send a running server a webhook signed exactly as the platform signs it.

The way to try handlers locally: ``contexten serve`` in one terminal, then::

    contexten simulate github pull_request.opened payload.json
    contexten simulate linear issue.updated payload.json
    contexten simulate slack app_mention payload.json

It signs with the same secrets the server reads (``CONTEXTEN_GITHUB_WEBHOOK_SECRET``,
``CONTEXTEN_LINEAR_WEBHOOK_SECRET``, ``CONTEXTEN_SLACK_SIGNING_SECRET``; the first of two
while rotating), prints the HTTP status and the response body, and exits 1 on a non-2xx.

Each run is a new delivery, as a platform would send it:

* GitHub: ``X-GitHub-Event`` (``pull_request.opened`` means the event ``pull_request`` with
  ``action: opened`` set in the payload), a fresh ``X-GitHub-Delivery`` (or ``--delivery``),
  ``X-Hub-Signature-256``. The server also deduplicates semantically (same object, same
  ``updated_at``), so sending one payload twice stores it once; ``--touch`` sets the
  payload's ``updated_at`` fields to now, as a real new change would.
* Linear: ``linear.<type>.<action>`` style or Linear's own (``Issue.update``) sets the
  payload's ``type`` and ``action``; ``webhookTimestamp`` is set to now; ``Linear-Event``,
  a fresh ``Linear-Delivery`` and ``Linear-Signature``.
* Slack: the Events API event type (``app_mention``, ``message``; a payload without the
  ``event_callback`` envelope is wrapped in one, with a fresh ``event_id``), an
  interactivity type (``block_actions``, ``view_submission``... posted as a form with one
  ``payload`` field), ``command`` (the payload's fields posted as a form) or
  ``url_verification``; ``X-Slack-Request-Timestamp`` now and ``X-Slack-Signature``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlencode

import click
import httpx

from contexten.cli._common import clean, fail
from contexten.exceptions import ConfigurationError
from contexten.ingress.config import ENV_SECRETS, IngressConfig
from contexten.integrations.github import webhooks as github
from contexten.integrations.linear import webhooks as linear
from contexten.integrations.slack import webhooks as slack

__all__ = [
    "SignedRequest",
    "SimulatedPlatform",
    "build_request",
    "github_request",
    "linear_request",
    "send",
    "simulate",
    "slack_request",
]

SimulatedPlatform = Literal["github", "linear", "slack"]
DEFAULT_URL: Final = "http://127.0.0.1:8000"
_INTERACTIVITY: Final = frozenset(
    {
        "block_actions",
        "block_suggestion",
        "interactive_message",
        "message_action",
        "shortcut",
        "view_closed",
        "view_submission",
    }
)
_LINEAR_VERBS: Final = {"created": "create", "updated": "update", "removed": "remove"}
_WORD: Final = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A webhook request ready to post.

    Attributes:
        platform: which platform it imitates.
        path: the server's route (``/webhooks/github``).
        body: the exact bytes that were signed.
        headers: the platform's headers, signature included.
        delivery: the delivery id (GitHub, Linear) or Slack ``event_id``, when there is one.
    """

    platform: SimulatedPlatform
    path: str
    body: bytes
    headers: dict[str, str]
    delivery: str | None

    def url(self, base: str) -> str:
        """The full URL of this request on the server at ``base``."""
        return base.rstrip("/") + self.path


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def github_request(
    event: str,
    payload: dict[str, Any],
    *,
    secret: str | bytes,
    action: str | None = None,
    delivery: str | None = None,
    touch: bool = False,
    now: datetime | None = None,
) -> SignedRequest:
    """A GitHub delivery of ``event`` (``pull_request`` or ``pull_request.opened``).

    Args:
        event: the ``X-GitHub-Event`` name, optionally ``.action`` (sets ``payload.action``).
        payload: the JSON payload (copied, not changed).
        secret: the webhook secret to sign with.
        action: sets ``payload["action"]`` (wins over the one in ``event``).
        delivery: the ``X-GitHub-Delivery`` id (default: a fresh UUID).
        touch: set every top-level object's ``updated_at`` to ``now`` (a new change for the
            server's semantic dedup).
        now: the time for ``touch`` (default: the wall clock).
    """
    name, _, event_action = event.partition(".")
    payload = dict(payload)
    if action or event_action:
        payload["action"] = action or event_action
    if touch:
        stamp = _now(now).strftime("%Y-%m-%dT%H:%M:%SZ")
        for key, value in list(payload.items()):
            if isinstance(value, dict) and "updated_at" in value:
                payload[key] = {**value, "updated_at": stamp}
    body = _json(payload)
    delivery = delivery or str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/contexten-simulate",
        github.EVENT_HEADER: name,
        github.DELIVERY_HEADER: delivery,
        github.SIGNATURE_HEADER: github.sign(secret, body),
    }
    return SignedRequest("github", "/webhooks/github", body, headers, delivery)


def _linear_type(text: str) -> str:
    if "_" not in text and text[:1].isupper():
        return text  # already Linear's form: Issue, IssueLabel
    return "".join(word.capitalize() for word in _WORD.findall(text))


def linear_request(
    event: str,
    payload: dict[str, Any],
    *,
    secret: str | bytes,
    action: str | None = None,
    delivery: str | None = None,
    now: datetime | None = None,
) -> SignedRequest:
    """A Linear delivery; ``event`` is ``Issue``, ``Issue.update`` or ``issue.updated``.

    Args:
        event: the data type, optionally ``.action`` (``create``/``update``/``remove`` or
            their past tenses); sets the payload's ``type`` (and ``action``).
        payload: the JSON payload (copied, not changed).
        secret: the signing secret.
        action: sets ``payload["action"]`` (wins over the one in ``event``).
        delivery: the ``Linear-Delivery`` id (default: a fresh UUID).
        now: the ``webhookTimestamp`` (default: the wall clock).
    """
    kind, _, event_action = event.partition(".")
    payload = dict(payload)
    payload["type"] = _linear_type(kind)
    verb = action or event_action
    if verb:
        payload["action"] = _LINEAR_VERBS.get(verb, verb)
    payload["webhookTimestamp"] = int(_now(now).timestamp() * 1000)
    body = _json(payload)
    delivery = delivery or str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Linear-Webhook",
        linear.EVENT_HEADER: str(payload["type"]),
        linear.DELIVERY_HEADER: delivery,
        linear.SIGNATURE_HEADER: linear.sign(secret, body),
    }
    return SignedRequest("linear", "/webhooks/linear", body, headers, delivery)


def _slack_body(
    event: str, payload: dict[str, Any], delivery: str | None, now: datetime
) -> tuple[bytes, str, str | None]:
    """The body, its content type and the event id of a Slack request of kind ``event``."""
    form = "application/x-www-form-urlencoded"
    if event == "command":
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()}
        return urlencode(fields).encode(), form, None
    if event in _INTERACTIVITY:
        return urlencode({"payload": _json({**payload, "type": event})}).encode(), form, None
    if event == "url_verification":
        return _json({**payload, "type": event}), "application/json", None
    envelope: dict[str, Any]
    if payload.get("type") == "event_callback":
        inner = payload.get("event")
        envelope = {**payload, "event": {**(inner if isinstance(inner, dict) else {})}}
    else:
        envelope = {"type": "event_callback", "event": dict(payload)}
        envelope["team_id"] = payload.get("team") or "T0SIMULATE"
    envelope["event"]["type"] = event
    envelope["event_id"] = delivery or "Ev" + uuid.uuid4().hex[:16].upper()
    envelope["event_time"] = int(now.timestamp())
    return _json(envelope), "application/json", str(envelope["event_id"])


def slack_request(
    event: str,
    payload: dict[str, Any],
    *,
    secret: str | bytes,
    delivery: str | None = None,
    now: datetime | None = None,
) -> SignedRequest:
    """A Slack request of kind ``event`` (see the module docstring), signed at ``now``.

    Args:
        event: an Events API type, an interactivity type, ``command`` or
            ``url_verification``.
        payload: the JSON payload (copied, not changed).
        secret: the app's signing secret.
        delivery: the Events API ``event_id`` (default: a fresh one).
        now: the request timestamp (default: the wall clock).
    """
    when = _now(now)
    body, content_type, event_id = _slack_body(event, payload, delivery, when)
    timestamp = str(int(when.timestamp()))
    headers = {
        "Content-Type": content_type,
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        slack.TIMESTAMP_HEADER: timestamp,
        slack.SIGNATURE_HEADER: slack.sign(secret, timestamp, body),
    }
    return SignedRequest("slack", "/webhooks/slack", body, headers, event_id)


def build_request(
    platform: SimulatedPlatform,
    event: str,
    payload: dict[str, Any],
    *,
    secret: str | bytes,
    action: str | None = None,
    delivery: str | None = None,
    touch: bool = False,
    now: datetime | None = None,
) -> SignedRequest:
    """A signed request for ``platform`` (dispatches to the per-platform builders).

    Raises:
        ConfigurationError: an option that does not apply to ``platform``.
    """
    if platform == "github":
        return github_request(
            event, payload, secret=secret, action=action, delivery=delivery, touch=touch, now=now
        )
    if touch:
        raise ConfigurationError("--touch applies to github only")
    if platform == "linear":
        return linear_request(
            event, payload, secret=secret, action=action, delivery=delivery, now=now
        )
    if action:
        raise ConfigurationError("--action applies to github and linear; for slack, the event")
    return slack_request(event, payload, secret=secret, delivery=delivery, now=now)


async def send(client: httpx.AsyncClient, base_url: str, request: SignedRequest) -> httpx.Response:
    """Post ``request`` to the server at ``base_url`` with ``client``."""
    return await client.post(request.url(base_url), content=request.body, headers=request.headers)


def _load_payload(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise click.BadParameter(f"cannot read {path} as JSON: {e}", param_hint="PAYLOAD") from e
    if not isinstance(payload, dict):
        raise click.BadParameter(f"{path} holds a {type(payload).__name__}, not a JSON object")
    return payload


def _secret(platform: SimulatedPlatform) -> bytes:
    config = IngressConfig.from_env()
    secrets = config.secrets(platform)
    if not secrets:
        raise ConfigurationError(
            f"set {ENV_SECRETS[platform]} to the secret the server uses, to sign with it"
        )
    return secrets[0]


@click.command()
@click.argument("platform", type=click.Choice(["github", "linear", "slack"]))
@click.argument("event")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=DEFAULT_URL, show_default=True, help="The running server.")
@click.option("--action", default=None, help="Set the payload's action (github, linear).")
@click.option("--delivery", default=None, help="Delivery id / Slack event_id (default: fresh).")
@click.option("--touch", is_flag=True, help="github: set the objects' updated_at to now.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the answer.")
def simulate(
    platform: SimulatedPlatform,
    event: str,
    payload: Path,
    url: str,
    action: str | None,
    delivery: str | None,
    touch: bool,
    timeout: float,
) -> None:
    """Send a running server a signed PLATFORM webhook of EVENT with the JSON in PAYLOAD."""
    data = _load_payload(payload)
    try:
        request = build_request(
            platform,
            event,
            data,
            secret=_secret(platform),
            action=action,
            delivery=delivery,
            touch=touch,
        )
    except ConfigurationError as e:
        fail(str(e))
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout) as client:
            response = client.post(request.url(url), content=request.body, headers=request.headers)
    except httpx.HTTPError as e:
        fail(f"{request.url(url)}: {type(e).__name__}: {e}")
    elapsed = (time.perf_counter() - started) * 1000
    ident = f" delivery {request.delivery}" if request.delivery else ""
    click.echo(
        f"HTTP {response.status_code} {response.reason_phrase} in {elapsed:.0f} ms"
        f" ({platform} {event}{ident})"
    )
    if response.content:  # the server's answer may quote the payload: print it inert
        click.echo("\n".join(clean(line) for line in response.text.split("\n")))
    if not response.is_success:
        sys.exit(1)
