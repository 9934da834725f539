"""GitHub's real webhook examples through the ingress: each stored once, with its type,
subject and correlation id; a redelivery stores nothing more."""

from __future__ import annotations

import json
import re

import httpx

from contexten.ingress import IngressConfig, create_ingress_app
from contexten.integrations.github import webhooks as gh
from contexten.store import create_store

from ._webhook_fixtures import github_fixture_files

SECRET = "corpus-secret"

_IDENTIFIER = re.compile(r"^[A-Z][A-Z0-9]*-[0-9]+$")


async def test_every_real_example_is_stored_once_and_redelivery_stores_nothing() -> None:
    files = github_fixture_files()
    assert len(files) == 500  # the shared collection (see test_github_webhooks.py)
    async with create_store("memory://") as store:
        config = IngressConfig.from_env({"CONTEXTEN_GITHUB_WEBHOOK_SECRET": SECRET})
        app = create_ingress_app(store, config)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingress.test"
        ) as client:
            for i, path in enumerate(files):
                payload = json.loads(path.read_bytes())
                body = json.dumps(payload).encode()
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": path.parent.name,
                    "X-GitHub-Delivery": f"d-{i}",
                    "X-Hub-Signature-256": gh.sign(SECRET, body),
                }
                first = await client.post("/webhooks/github", content=body, headers=headers)
                assert first.status_code in (200, 202), (path, first.text)
                again = await client.post("/webhooks/github", content=body, headers=headers)
                assert again.status_code == 200, path
                assert again.json() == {"status": "duplicate"}
        stored = await store.read_all(limit=10_000)
    # Some examples are the same delivery seen from two hosts (same content, same object):
    # those are stored once, by design; everything else once each.
    assert 0 < len(stored) <= len(files)
    for rec in stored:
        event = rec.event
        assert event.type.startswith("github.")
        assert event.source == "github"
        if event.correlation_id is not None:
            assert _IDENTIFIER.match(event.correlation_id) or event.correlation_id.startswith(
                ("github:", "slack:")
            ), event.correlation_id
