"""The sandbox over real HTTP: served by uvicorn on loopback, its agent runs progress on their
own and send signed webhooks to a listening app; faults reach a real client as they would
from a real platform."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contexten.exceptions import RateLimited
from contexten.integrations.codegen import AgentRunPoller, CodegenClient
from contexten.integrations.github import GitHubClient
from contexten.integrations.linear import LinearClient
from contexten.resilience import RetryPolicy
from contexten.testing.sandbox import Sandbox, SandboxConfig, sign_slack

QUICK = RetryPolicy(initial_interval=0.01, maximum_interval=0.05, maximum_attempts=4)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields its base URL.

    uvicorn configures its loggers (levels, handlers, propagation) when it starts; they are
    put back afterwards, so a later test of the process's logging sees them as they were.
    """
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = [
        (lg, lg.level, lg.propagate, list(lg.handlers)) for lg in map(logging.getLogger, names)
    ]
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        for logger, level, propagate, handlers in saved:
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers[:] = handlers


class Receiver:
    """A webhook receiver that checks each platform's signature, as the ingress would."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/webhooks/{platform}", self.hook, methods=["POST"])])

    def _valid(self, platform: str, request: Request, body: bytes) -> bool:
        secret = self.secrets[platform].encode()
        digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
        headers = request.headers
        if platform == "github":
            return hmac.compare_digest(headers["x-hub-signature-256"], f"sha256={digest}")
        if platform == "linear":
            return hmac.compare_digest(headers["linear-signature"], digest)
        expected = sign_slack(self.secrets["slack"], headers["x-slack-request-timestamp"], body)
        return hmac.compare_digest(headers["x-slack-signature"], expected)

    async def hook(self, request: Request) -> Response:
        platform = request.path_params["platform"]
        body = await request.body()
        if not self._valid(platform, request, body):
            return Response(status_code=401)
        self.received.append((platform, json.loads(body)))
        self.arrived.set()
        return Response(status_code=202)

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                for platform, payload in self.received:
                    if predicate(platform, payload):
                        return payload
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(scan(), timeout)


@pytest.fixture
def quiet_uvicorn() -> Iterator[None]:
    # Dropped connections are logged as application errors by uvicorn; that is the point.
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


async def test_served_sandbox_runs_agents_and_sends_signed_webhooks(quiet_uvicorn: None) -> None:
    # Codegen sends no webhooks (it documents polling): the run is followed by polling.
    config = SandboxConfig(agent_run_start_after=0.05, agent_run_duration=0.1)
    receiver = Receiver(config.secrets)
    async with serve(receiver.app) as hooks_url:
        config.webhook_url = f"{hooks_url}/webhooks"
        sandbox = Sandbox(config, tick_interval=0.02)
        async with serve(sandbox.app) as base, sandbox.clients(base, retry=QUICK) as clients:
            issue = sandbox.linear.create_issue("Add login", labels=["agent"])
            codegen = clients.get(CodegenClient)
            run = await codegen.create_agent_run(
                f"{issue['identifier']} Add login",
                metadata={"repo": "acme/api"},
                idempotency_key="wf-1:run",
            )
            poller = AgentRunPoller(codegen)
            poller.track([run["id"]])
            seen: list[str] = []
            async with asyncio.timeout(10):
                while poller.tracked:
                    seen += [e.type for e in await poller.poll_once()]
                    await asyncio.sleep(0.02)
            assert seen[-1] == "codegen.agent_run.completed"
            opened = await receiver.wait_for(
                lambda p, b: p == "github" and b.get("action") == "opened"
            )
            assert opened["pull_request"]["head"]["ref"].startswith("codegen-bot/eng-1")
            created = await receiver.wait_for(lambda p, b: p == "linear")
            assert created["type"] == "Issue"
            assert created["data"]["identifier"] == issue["identifier"]
            assert abs(created["webhookTimestamp"] / 1000 - sandbox.core.now()) < 60


async def test_faults_over_real_connections(quiet_uvicorn: None) -> None:
    sandbox = Sandbox()
    sandbox.github.create_issue("acme/api", "Bug")
    async with serve(sandbox.app) as base, sandbox.clients(base, retry=QUICK) as clients:
        gh = clients.get(GitHubClient)
        reset = sandbox.inject("reset", platform="github", method="GET")
        with pytest.raises(Exception, match="Not Found"):
            await gh.get_pull_request("acme/api", 1)  # issue 1 is not a PR: after the reset
        assert reset.fired == 1

        lost = sandbox.inject("lost_response", platform="github", method="POST")
        comment = await gh.create_issue_comment("acme/api", 1, "Once", idempotency_key="k1")
        assert lost.fired == 1
        assert list(sandbox.github.repo("acme/api").comments) == [comment["id"]]
        assert gh.health().open_connections <= gh.settings.max_connections

        async with httpx.AsyncClient(base_url=base) as control:
            answer = await control.post(
                "/_sandbox/faults", json={"kind": "status", "platform": "github", "status": 502}
            )
            assert answer.json()["active"][0]["kind"] == "status"
            await gh.add_labels("acme/api", 1, ["retried"])
            state = (await control.get("/_sandbox/state")).json()
            assert state["github"]["acme/api"]["comments"] == 1


async def test_linear_budget_exhaustion_is_reported_as_ratelimited() -> None:
    sandbox = Sandbox(linear_request_limit=2)
    issue = sandbox.linear.create_issue("Add login")
    async with sandbox.clients(retry=QUICK, max_rate_limit_wait=5) as clients:
        lin = clients.get(LinearClient)
        await lin.get_issue(issue["id"])
        await lin.get_issue(issue["id"])
        with pytest.raises(RateLimited) as raised:
            await lin.get_issue(issue["id"])
    assert raised.value.retry_after > 5


async def test_control_api_acts_as_a_person() -> None:
    sandbox = Sandbox()
    async with httpx.AsyncClient(
        transport=sandbox.transport(), base_url="http://sandbox"
    ) as control:
        issue = (await control.post("/_sandbox/linear/issues", json={"title": "Add SSO"})).json()
        await control.post(
            f"/_sandbox/linear/issues/{issue['identifier']}", json={"add_labels": ["agent"]}
        )
        update = sandbox.outbox[-1].json()
        assert update["action"] == "update"
        assert update["updatedFrom"]["labelIds"] == []
        agent = sandbox.linear.label_named("agent")
        assert update["data"]["labels"] == [
            {"id": agent["id"], "name": "agent", "color": agent["color"]}
        ]
        assert update["actor"]["name"] == "Ada Lovelace"
        hooks = (await control.get("/_sandbox/webhooks")).json()
        assert [h["platform"] for h in hooks] == ["linear", "linear"]
        await control.post("/_sandbox/reset")
        assert sandbox.linear.issues == {}


async def test_unauthenticated_requests_are_refused() -> None:
    sandbox = Sandbox()
    async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://x") as raw:
        assert (await raw.get("/github/repos/a/b/pulls/1")).status_code == 401
        slack = await raw.post("/slack/api/chat.postMessage", json={"channel": "C0ENG"})
        assert slack.json() == {"ok": False, "error": "not_authed"}
        linear = await raw.post("/linear/graphql", json={"query": "query { viewer { id } }"})
        assert linear.json()["errors"][0]["extensions"]["code"] == "AUTHENTICATION_ERROR"
        codegen = await raw.get("/codegen/v1/organizations/1/agent/runs")
        assert codegen.status_code == 401


async def test_github_lists_paginate_like_github() -> None:
    sandbox = Sandbox()
    number = sandbox.github.create_issue("acme/api", "Long thread")["number"]
    repo = sandbox.github.repo("acme/api")
    for n in range(250):
        sandbox.github.create_comment(repo, number, {"body": f"c{n}"}, author="octocat")
    old = next(iter(repo.comments.values()))
    old["updated_at"] = "2020-01-01T00:00:00Z"
    path = f"/github/repos/acme/api/issues/{number}/comments"
    headers = {"Authorization": "Bearer t"}
    async with httpx.AsyncClient(
        transport=sandbox.transport(), base_url="http://x", headers=headers
    ) as raw:
        first = await raw.get(path)
        assert [c["body"] for c in first.json()] == [f"c{n}" for n in range(30)]  # 30 a page
        assert set(first.links) == {"next", "last"}
        last = httpx.URL(first.links["last"]["url"])
        assert (last.path, last.params["page"], last.params["per_page"]) == (path, "9", "30")

        middle = await raw.get(path, params={"per_page": 100, "page": 2})
        assert [c["body"] for c in middle.json()][:1] == ["c100"]
        assert set(middle.links) == {"prev", "first", "next", "last"}
        end = await raw.get(middle.links["last"]["url"])
        assert [c["body"] for c in end.json()] == [f"c{n}" for n in range(200, 250)]
        assert set(end.links) == {"prev", "first"}
        assert (await raw.get(path, params={"per_page": 500})).json()[-1]["body"] == "c99"

        since = await raw.get(path, params={"since": "2021-01-01T00:00:00Z", "per_page": 100})
        assert since.json()[0]["body"] == "c1", "since drops comments updated before it"
        assert (await raw.get(path, params={"since": "yesterday"})).status_code == 422
        assert (await raw.get(path, params={"page": "two"})).status_code == 422
