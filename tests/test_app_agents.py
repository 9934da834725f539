"""The App acting on platforms: ctx.agents, the action log, echo suppression, health.

The sandbox runs in-process; its webhooks are delivered to the App through the real ingress
(signed, verified, normalised, stored), so an echo here takes the path it takes in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contexten import App, Event, HandlerContext
from contexten.agents.runtime import ECHO_EVENT, ECHO_SUBSCRIPTION
from contexten.exceptions import ConfigurationError, PlatformError
from contexten.ingress import IngressConfig, create_ingress_app
from contexten.ingress.config import ENV_SECRETS
from contexten.integrations import linear, slack
from contexten.integrations.echo import BotIdentity
from contexten.observability.app_metrics import instrument_app
from contexten.observability.metrics import Metrics
from contexten.resilience import RetryPolicy
from contexten.resilience.circuit_breaker import BreakerConfig
from contexten.testing import create_test_app
from contexten.testing.sandbox import Sandbox

HANG_GUARD = 30.0
REPO = "acme/api"


def identity_of(sandbox: Sandbox) -> BotIdentity:
    """Who the sandbox says we are."""
    config = sandbox.config
    return BotIdentity(
        github_logins=frozenset({config.github_bot_login}),
        slack_bot_ids=frozenset({config.slack_bot_id}),
        linear_user_ids=frozenset({sandbox.linear.bot["id"]}),
    )


class Webhooks:
    """Delivers the sandbox's outbox to the App's store through the real ingress."""

    def __init__(self, sandbox: Sandbox, app: App) -> None:
        secrets = sandbox.config.secrets
        env = {variable: secrets[platform] for platform, variable in ENV_SECRETS.items()}
        ingress = create_ingress_app(app.store, IngressConfig.from_env(env))
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingress), base_url="http://ingress"
        )
        self.sandbox = sandbox
        self.app = app
        self.sent = 0

    async def flush(self) -> int:
        """Deliver what the sandbox sent since the last flush; how many."""
        outbox = self.sandbox.outbox
        count = 0
        while self.sent < len(outbox):
            delivery = outbox[self.sent]
            self.sent += 1
            response = await self.client.post(
                f"/webhooks/{delivery.platform}", content=delivery.body, headers=delivery.headers
            )
            assert response.status_code in (200, 202), response.text
            count += 1
        return count

    async def settle(self) -> None:
        """Deliver and handle until nothing new happens."""
        async with asyncio.timeout(HANG_GUARD):
            while True:
                await self.flush()
                await self.app.drain()
                if self.sent == len(self.sandbox.outbox):
                    return


@pytest.fixture
async def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
async def app(sandbox: Sandbox) -> AsyncIterator[App]:
    app = create_test_app()
    app.use_agents(sandbox.clients(retry=RetryPolicy.no_retries()), bot=identity_of(sandbox))
    yield app
    await app.stop()


@pytest.fixture
async def webhooks(sandbox: Sandbox, app: App) -> AsyncIterator[Webhooks]:
    hooks = Webhooks(sandbox, app)
    yield hooks
    await hooks.client.aclose()


async def events_of(app: App, accept: Callable[[Event], bool]) -> list[Event]:
    """The stored events ``accept`` accepts (read while the app runs)."""
    return [r.event for r in await app.store.read_all(limit=10_000) if accept(r.event)]


def comment_bodies(sandbox: Sandbox) -> list[str]:
    return [c["body"].split("\n\n<!--")[0] for c in sandbox.github.repo(REPO).comments.values()]


def human_comment(sandbox: Sandbox, body: str) -> None:
    status, _ = sandbox.github.create_comment(
        sandbox.github.repo(REPO), 1, {"body": body}, author="ada"
    )
    assert status == 201


# -- ctx.agents and the action log --------------------------------------------------------------


async def test_handlers_act_through_ctx_agents_and_each_action_is_recorded(
    app: App, sandbox: Sandbox
) -> None:
    @app.on("deploy.finished", name="announce")
    async def announce(event: Event, ctx: HandlerContext) -> None:
        await ctx.agents.slack.post_message(
            "#eng", f"Deployed {event.data['version']}", idempotency_key=ctx.idempotency_key
        )

    async with app:
        cause = Event(type="deploy.finished", correlation_id="ENG-7", data={"version": "1.2"})
        await app.publish(cause)
        await app.drain()
        [recorded] = await events_of(app, lambda e: e.type.startswith("contexten.action."))
    [message] = sandbox.slack.messages["C0ENG"].values()
    assert message["text"] == "Deployed 1.2"
    assert recorded.type == "contexten.action.slack.post_message"
    assert recorded.causation_id == cause.id
    assert recorded.correlation_id == "ENG-7"
    assert recorded.data["fingerprints"] == [f"slack:C0ENG:{message['ts']}"]
    assert recorded.data["idempotency_key"] == f"announce:{cause.id}"


async def test_a_redelivered_handler_does_not_act_or_record_twice(
    app: App, sandbox: Sandbox
) -> None:
    attempts: list[int] = []

    @app.on("deploy.finished", name="announce", retry=RetryPolicy(initial_interval=0.01))
    async def announce(event: Event, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        await ctx.agents.slack.post_message("#eng", "Deployed", idempotency_key=ctx.idempotency_key)
        if ctx.attempt == 1:
            raise ConnectionError("lost the connection after posting")

    async with app:
        await app.publish(Event(type="deploy.finished"))
        await app.drain()
        actions = await events_of(app, lambda e: e.type.startswith("contexten.action."))
    assert attempts == [1, 2]
    assert len(sandbox.slack.messages["C0ENG"]) == 1
    assert len(actions) == 1


async def test_module_level_actions_in_workflow_steps_use_the_apps_clients(
    app: App, sandbox: Sandbox, webhooks: Webhooks
) -> None:
    @app.workflow("claim", on="linear.issue.updated", where=linear.label_added("agent"))
    async def claim(wf: Any, event: Event) -> str:
        moved = await wf.step(linear.move_issue, event.data["data"]["id"], state="In Progress")
        return str(moved["state"]["name"])

    async with app:
        issue = sandbox.linear.create_issue("Add login")
        sandbox.linear.update_issue(
            issue["id"],
            {"addedLabelIds": [sandbox.linear.label_named("agent")["id"]]},
            actor=sandbox.linear.human,
        )
        await webhooks.flush()
        [trigger] = await events_of(app, lambda e: e.type == "linear.issue.updated")
        handle = app.workflows.get_handle(f"claim:{trigger.id}")
        assert await handle.result(timeout=HANG_GUARD) == "In Progress"
        [recorded] = await events_of(app, lambda e: e.type == "contexten.action.linear.move_issue")
    assert recorded.data["workflow_id"] == handle.workflow_id
    assert recorded.data["step"] == "move_issue"
    assert recorded.causation_id == trigger.id
    assert recorded.correlation_id == issue["identifier"]


async def test_an_app_with_no_platform_configured_starts_without_a_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "CONTEXTEN_SANDBOX_URL",
        "CONTEXTEN_GITHUB_TOKEN",
        "CONTEXTEN_LINEAR_API_KEY",
        "CONTEXTEN_SLACK_BOT_TOKEN",
        "CONTEXTEN_CODEGEN_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    app = create_test_app()

    @app.on("a.b", name="noop")
    async def noop(event: Event, ctx: HandlerContext) -> None:
        assert ctx.agents is app.agents

    async with app:
        await app.publish(Event(type="a.b"))
        await app.drain()
        health = await app.health()
    assert health.ok
    assert set(health.agents) == {"github", "linear", "slack", "codegen"}
    assert all(
        a == {"available": True, "detail": "", "retry_after": 0.0} for a in health.agents.values()
    )
    assert app.clients.clients() == {}  # no pool was opened
    assert ECHO_SUBSCRIPTION not in app.subscriptions


async def test_use_agents_is_refused_while_running(app: App) -> None:
    async with app:
        with pytest.raises(ConfigurationError):
            app.use_agents()


# -- echoes ---------------------------------------------------------------------------------


async def test_a_comment_we_post_does_not_trigger_the_rule_that_posted_it(
    app: App, sandbox: Sandbox, webhooks: Webhooks
) -> None:
    seen: list[str] = []

    @app.on("github.issue_comment.created", name="thank")
    async def thank(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.data["comment"]["body"])
        await ctx.agents.github.create_issue_comment(
            REPO, event.data["issue"]["number"], "Thanks!", idempotency_key=ctx.idempotency_key
        )

    async with app:
        sandbox.github.create_issue(REPO, "It crashes")
        human_comment(sandbox, "Stack trace attached")
        await webhooks.settle()
        echoes = await events_of(app, lambda e: e.type == ECHO_EVENT)
    assert seen == ["Stack trace attached"]
    assert comment_bodies(sandbox) == ["Stack trace attached", "Thanks!"]
    [mark] = echoes
    assert mark.data["reason"] == "bot_actor"
    assert mark.data["event_type"] == "github.issue_comment.created"


async def test_recorded_actions_are_echoes_without_a_bot_identity(sandbox: Sandbox) -> None:
    app = create_test_app()
    app.use_agents(sandbox.clients(), bot=BotIdentity())  # acting through a person's token
    webhooks = Webhooks(sandbox, app)
    seen: list[str] = []

    @app.on("github.issue_comment.created", name="thank")
    async def thank(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.data["comment"]["body"])
        await ctx.agents.github.create_issue_comment(REPO, 1, "Thanks!")

    try:
        async with app:
            sandbox.github.create_issue(REPO, "It crashes")
            human_comment(sandbox, "Stack trace attached")
            await webhooks.settle()
            [mark] = await events_of(app, lambda e: e.type == ECHO_EVENT)
    finally:
        await webhooks.client.aclose()
    assert seen == ["Stack trace attached"]
    assert mark.data["reason"] == "recorded_action"


async def test_a_subscription_that_asks_for_echoes_gets_them(
    app: App, sandbox: Sandbox, webhooks: Webhooks
) -> None:
    seen: list[str] = []

    @app.on("github.issue_comment.created", name="thank", echoes=True)
    async def thank(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.data["comment"]["body"].split("\n\n<!--")[0])
        if len(seen) < 3:  # without echo suppression, a rule like this answers itself
            await ctx.agents.github.create_issue_comment(
                REPO, 1, f"Thanks #{len(seen)}", idempotency_key=ctx.idempotency_key
            )

    async with app:
        sandbox.github.create_issue(REPO, "It crashes")
        human_comment(sandbox, "Stack trace attached")
        await webhooks.settle()
    assert seen == ["Stack trace attached", "Thanks #1", "Thanks #2"]


async def test_our_own_updates_do_not_start_workflows(
    app: App, sandbox: Sandbox, webhooks: Webhooks
) -> None:
    @app.workflow("triage", on="linear.issue.updated", key=lambda e: e.id)
    async def triage(wf: Any, event: Event) -> None:
        await wf.step(linear.move_issue, event.data["data"]["id"], state="Backlog")

    @app.workflow("sentinel", on="test.sentinel", key=lambda e: "only")
    async def sentinel(wf: Any, event: Event) -> None:
        return None

    async with app:
        issue = sandbox.linear.create_issue("Flaky test")
        sandbox.linear.update_issue(issue["id"], {"priority": 2}, actor=sandbox.linear.human)
        await webhooks.flush()
        [update] = await events_of(app, lambda e: e.type == "linear.issue.updated")
        first = app.workflows.get_handle(f"triage:{update.id}")
        await first.result(timeout=HANG_GUARD)
        assert await webhooks.flush() == 1  # the echo of our move to Backlog
        # The engine reads the log in order: once the sentinel ran, the echo was seen.
        await app.publish(Event(type="test.sentinel"))
        await app.workflows.get_handle("sentinel:only").result(timeout=HANG_GUARD)
        instances = await app.list_workflows(name="triage")
        echoes = await events_of(app, lambda e: e.type == "linear.issue.updated")
    assert len(echoes) == 2
    assert [i.workflow_id for i in instances] == [first.workflow_id]


async def test_people_acting_on_objects_we_touched_are_not_echoes(
    app: App, sandbox: Sandbox, webhooks: Webhooks
) -> None:
    seen: list[str] = []

    @app.on("slack.block_actions", name="pressed")
    async def pressed(event: Event, ctx: HandlerContext) -> None:
        decision = slack.approval_decision(event)
        assert decision is not None
        seen.append(decision[0])

    async with app:
        posted = await app.agents.slack.request_approval("#eng", "Merge #2?", "req-1")
        sandbox.slack.press("C0ENG", posted["ts"], slack.APPROVE_ACTION_ID)
        await webhooks.settle()
    assert seen == ["approved"]


async def test_echoes_are_still_recognised_after_a_restart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    sandbox.github.create_issue(REPO, "It crashes")
    first = create_test_app(url)
    first.use_agents(sandbox.clients(), bot=BotIdentity())
    async with first:
        with first.acting():
            await first.agents.github.create_issue_comment(REPO, 1, "Thanks!")
    [delivery] = [d for d in sandbox.outbox if d.event == "issue_comment"]
    webhook = Event(type="github.issue_comment.created", source="github", data=delivery.json())
    restarted = create_test_app(url)
    restarted.use_agents(sandbox.clients(), bot=BotIdentity())
    assert not restarted.is_echo(webhook)  # not started: nothing remembered yet
    async with restarted:
        assert restarted.is_echo(webhook)


# -- health ---------------------------------------------------------------------------------


async def test_an_open_breaker_shows_in_the_health_report(sandbox: Sandbox) -> None:
    app = create_test_app()
    app.use_agents(
        sandbox.clients(
            retry=RetryPolicy.no_retries(),
            breaker=BreakerConfig(failure_threshold=2, reset_timeout=60),
        )
    )
    sandbox.inject("status", platform="slack", status=503, times=None)
    sandbox.github.create_issue("acme/api", "Bug")
    async with app:
        for _ in range(2):
            with pytest.raises(PlatformError):
                await app.agents.slack.post_message("#eng", "hello")
        await app.agents.github.create_issue_comment("acme/api", 1, "hello")
        report = await app.health()
    assert report.ok  # a platform being down does not make the app unready
    budgets = report.agents["github"]["rate_limits"]  # learned from the response headers
    assert budgets
    assert all(b["limit"] and b["remaining"] < b["limit"] for b in budgets.values())
    assert report.agents["slack"]["available"] is False
    assert report.agents["slack"]["breaker"] == "open"
    assert report.agents["github"]["available"] is True
    assert report.to_dict()["agents"]["slack"]["breaker"] == "open"


async def test_an_open_breaker_shows_in_the_metrics(sandbox: Sandbox) -> None:
    app = create_test_app()
    app.use_agents(
        sandbox.clients(
            retry=RetryPolicy.no_retries(),
            breaker=BreakerConfig(failure_threshold=2, reset_timeout=60),
        )
    )
    sandbox.inject("status", platform="slack", status=503, times=None)
    metrics = Metrics()
    collector = instrument_app(metrics, app.health)
    async with app:
        for _ in range(2):
            with pytest.raises(PlatformError):
                await app.agents.slack.post_message("#eng", "hello")
        await collector.refresh()
    registry = metrics.registry
    assert registry.get_sample_value("contexten_circuit_open", {"agent": "slack"}) == 1.0
    assert registry.get_sample_value("contexten_agent_available", {"agent": "slack"}) == 0.0
    assert registry.get_sample_value("contexten_agent_available", {"agent": "github"}) == 1.0
