"""Signed webhooks the sandbox sends, the way each platform signs and delivers them.

- GitHub: ``X-GitHub-Event``, ``X-GitHub-Delivery`` and
  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.
- Linear: ``Linear-Event``, ``Linear-Delivery``, ``Linear-Signature: <hex HMAC>``, and
  ``webhookTimestamp`` (ms) in the body.
- Slack: ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=<hex HMAC of
  "v0:<timestamp>:<body>">``; Events API deliveries are JSON, interactivity payloads are a form
  with one ``payload`` field.
- Codegen (the sandbox's own convention, for agent-run updates): ``X-Codegen-Event``,
  ``X-Codegen-Delivery`` and ``X-Codegen-Signature: sha256=<hex HMAC>``.

Every delivery is kept in :attr:`WebhookSender.outbox` (whether or not a URL is configured);
with a URL, a background task posts them in order, retrying failures a few times.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

__all__ = ["Delivery", "WebhookSender", "sign_github", "sign_linear", "sign_slack"]

_ATTEMPTS = 4


def sign_github(secret: str, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256`` value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_linear(secret: str, body: bytes) -> str:
    """Linear's ``Linear-Signature`` value."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_slack(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's ``X-Slack-Signature`` value."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Delivery:
    """One webhook: where it goes, what it carries, what came of it."""

    platform: str
    event: str
    body: bytes
    headers: dict[str, str]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: int | None = None
    attempts: int = 0
    error: str | None = None

    def json(self) -> Any:
        """The body parsed (the ``payload`` field for form-encoded Slack interactivity)."""
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            from urllib.parse import parse_qs

            return json.loads(parse_qs(self.body.decode())["payload"][0])
        return json.loads(self.body)


class WebhookSender:
    """Builds, signs, records and (with a URL) delivers the sandbox's webhooks.

    Args:
        url: base URL; deliveries go to ``<url>/<platform>`` (``None``: record only).
        secrets: signing secret per platform.
    """

    def __init__(self, url: str | None, secrets: dict[str, str]) -> None:
        self.url = url.rstrip("/") if url else None
        self.secrets = secrets
        self.outbox: list[Delivery] = []
        self._queue: asyncio.Queue[Delivery] | None = None
        self._task: asyncio.Task[None] | None = None

    def github(self, event: str, payload: dict[str, Any]) -> Delivery:
        """Queue a GitHub delivery of ``event`` (``X-GitHub-Event``)."""
        body = json.dumps(payload).encode()
        delivery = Delivery("github", event, body, {})
        delivery.headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/sandbox",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery.id,
            "X-Hub-Signature-256": sign_github(self.secrets.get("github", ""), body),
        }
        return self._enqueue(delivery)

    def linear(self, event: str, payload: dict[str, Any]) -> Delivery:
        """Queue a Linear delivery (``event`` is the type: ``Issue``, ``Comment``)."""
        payload = {**payload, "webhookTimestamp": int(time.time() * 1000)}
        body = json.dumps(payload).encode()
        delivery = Delivery("linear", event, body, {})
        delivery.headers = {
            "Content-Type": "application/json",
            "User-Agent": "Linear-Webhook",
            "Linear-Event": event,
            "Linear-Delivery": delivery.id,
            "Linear-Signature": sign_linear(self.secrets.get("linear", ""), body),
        }
        return self._enqueue(delivery)

    def slack_event(self, payload: dict[str, Any]) -> Delivery:
        """Queue a Slack Events API delivery (an ``event_callback`` envelope)."""
        body = json.dumps(payload).encode()
        return self._enqueue(
            self._slack(
                str(payload.get("event", {}).get("type", "event")), body, "application/json"
            )
        )

    def slack_interaction(self, payload: dict[str, Any]) -> Delivery:
        """Queue a Slack interactivity delivery (``payload=<json>`` form)."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self._enqueue(
            self._slack(str(payload.get("type")), body, "application/x-www-form-urlencoded")
        )

    def _slack(self, event: str, body: bytes, content_type: str) -> Delivery:
        timestamp = str(int(time.time()))
        return Delivery(
            "slack",
            event,
            body,
            {
                "Content-Type": content_type,
                "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": sign_slack(self.secrets.get("slack", ""), timestamp, body),
            },
        )

    def _enqueue(self, delivery: Delivery) -> Delivery:
        self.outbox.append(delivery)
        if self._queue is not None:
            self._queue.put_nowait(delivery)
        return delivery

    async def start(self) -> None:
        """Start delivering (no-op without a URL)."""
        if self.url is None or self._task is not None:
            return
        self._queue = asyncio.Queue()
        for delivery in self.outbox:
            if delivery.status is None:
                self._queue.put_nowait(delivery)
        self._task = asyncio.create_task(self._run(), name="sandbox-webhooks")

    async def stop(self) -> None:
        """Stop delivering (what is queued stays in the outbox, undelivered)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._queue = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued delivery was attempted."""
        if self._queue is not None:
            await asyncio.wait_for(self._queue.join(), timeout)

    async def _run(self) -> None:
        assert self._queue is not None
        assert self.url is not None
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                delivery = await self._queue.get()
                try:
                    await self._deliver(client, delivery)
                finally:
                    self._queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            delivery.attempts = attempt
            try:
                response = await client.post(
                    f"{self.url}/{delivery.platform}",
                    content=delivery.body,
                    headers=delivery.headers,
                )
            except httpx.HTTPError as error:
                delivery.error = f"{type(error).__name__}: {error}"
            else:
                delivery.status = response.status_code
                if response.status_code < 500:
                    delivery.error = None
                    return
                delivery.error = f"HTTP {response.status_code}"
            await asyncio.sleep(0.2 * 2**attempt)
