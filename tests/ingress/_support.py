"""Signed requests for the ingress tests, built the way each platform builds them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from contexten.exceptions import StoreUnavailable
from contexten.ingress import IngressConfig
from contexten.ingress.receivers import SIGNATURE_HEADERS
from contexten.integrations.github import webhooks as gh
from contexten.integrations.linear import webhooks as lw
from contexten.integrations.slack import webhooks as sw
from contexten.store.base import Append, AppendResult
from contexten.store.memory import MemoryEventStore
from contexten.testing import VirtualClock

NOW = datetime(2030, 1, 1, tzinfo=UTC)
GITHUB_SECRET = "gh-secret-Zq8v"
GITHUB_NEXT_SECRET = "gh-next-secret-Kp3x"
LINEAR_SECRET = "lin-secret-Wm4t"
SLACK_SECRET = "slack-secret-Hy7r"
ADMIN_TOKEN = "test-admin-token-Vb7sQ2"
"""The configuration's ``CONTEXTEN_ADMIN_TOKEN`` (an admin bearer token) in these tests."""
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
"""Headers that authenticate as that admin."""
ALL_SECRETS = (
    GITHUB_SECRET,
    GITHUB_NEXT_SECRET,
    LINEAR_SECRET,
    SLACK_SECRET,
    ADMIN_TOKEN,
)
HANG_GUARD = 30.0


def make_config(**overrides: Any) -> IngressConfig:
    """Secrets for the platforms (GitHub with two, as during a rotation), the admin token,
    a fixed clock."""
    env = {
        "CONTEXTEN_ADMIN_TOKEN": ADMIN_TOKEN,
        "CONTEXTEN_GITHUB_WEBHOOK_SECRET": f"{GITHUB_SECRET},{GITHUB_NEXT_SECRET}",
        "CONTEXTEN_LINEAR_WEBHOOK_SECRET": LINEAR_SECRET,
        "CONTEXTEN_SLACK_SIGNING_SECRET": SLACK_SECRET,
    }
    overrides.setdefault("clock", VirtualClock(NOW))
    return IngressConfig.from_env(env, **overrides)


def unverified_signature(platform: str) -> dict[str, str]:
    """A signature header that is present but wrong: the request gets as far as its body."""
    return {SIGNATURE_HEADERS[platform]: "sha256=" + "0" * 64}  # type: ignore[index]


def pull_request_payload(number: int = 7, updated_at: str = "2030-01-01T00:00:00Z") -> Any:
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "id": 1000 + number,
            "number": number,
            "title": f"ENG-{number}: a change",
            "body": "",
            "head": {"ref": f"alice/eng-{number}-change"},
            "updated_at": updated_at,
        },
        "repository": {"full_name": "octo/repo"},
        "sender": {"login": "alice"},
    }


def github_request(
    payload: Any = None,
    *,
    body: bytes | None = None,
    event: str = "pull_request",
    delivery: str | None = None,
    secret: str = GITHUB_SECRET,
) -> tuple[bytes, dict[str, str]]:
    """A GitHub delivery: body and headers, signed with ``secret``."""
    if body is None:
        body = json.dumps(pull_request_payload() if payload is None else payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": gh.sign(secret, body),
    }
    return body, headers


def linear_payload(*, timestamp_ms: int | None = None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": "update",
        "type": "Issue",
        "data": {"id": "issue-1", "identifier": "ENG-1", "title": "Fix", "stateId": "s2"},
        "updatedFrom": {"stateId": "s1"},
        "actor": {"id": "user-1", "name": "Alice"},
        "webhookTimestamp": int(NOW.timestamp() * 1000) if timestamp_ms is None else timestamp_ms,
    }
    payload.update(extra)
    return payload


def linear_request(
    payload: Any = None,
    *,
    body: bytes | None = None,
    delivery: str | None = None,
    secret: str = LINEAR_SECRET,
) -> tuple[bytes, dict[str, str]]:
    if body is None:
        body = json.dumps(linear_payload() if payload is None else payload).encode()
    return body, {
        "Content-Type": "application/json",
        "Linear-Event": "Issue",
        "Linear-Delivery": delivery or str(uuid.uuid4()),
        "Linear-Signature": lw.sign(secret, body),
    }


def slack_event_payload(event_id: str = "Ev1", text: str = "hello") -> dict[str, Any]:
    return {
        "type": "event_callback",
        "team_id": "T1",
        "event_id": event_id,
        "event": {"type": "app_mention", "user": "U1", "text": text, "ts": "1.1", "channel": "C1"},
    }


def slack_request(
    payload: Any = None,
    *,
    body: bytes | None = None,
    form: dict[str, str] | None = None,
    timestamp: int | None = None,
    secret: str = SLACK_SECRET,
    retry: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    content_type = "application/json"
    if form is not None:
        body = urlencode(form).encode()
        content_type = "application/x-www-form-urlencoded"
    elif body is None:
        body = json.dumps(slack_event_payload() if payload is None else payload).encode()
    ts = str(int(NOW.timestamp()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sw.sign(secret, ts, body),
    }
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return body, headers


class DownStore(MemoryEventStore):
    """An in-memory store whose writes fail the way a broken disk or network fails them."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.down = True

    async def commit(
        self,
        appends: Sequence[Append],
        *,
        dedup_key: str | None = None,
        checkpoint: tuple[str, int] | None = None,
    ) -> list[AppendResult]:
        if self.down:
            raise self.error
        return await super().commit(appends, dedup_key=dedup_key, checkpoint=checkpoint)

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("disk gone")
