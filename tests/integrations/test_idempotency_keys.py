"""Any idempotency key is accepted by every platform action (issue 9, §3).

A handler defined inside a function has ``<locals>`` in its subscription name, hence in
``ctx.idempotency_key``; GitHub and Linear actions used to refuse it with ValueError, so the
event was dead-lettered and nothing was done.
"""

from __future__ import annotations

import pytest

from contexten import App, Event, HandlerContext
from contexten.integrations.idempotency import find_marker, id_for_key, platform_key, with_marker
from contexten.resilience import RetryPolicy
from contexten.testing import create_test_app
from contexten.testing.sandbox import Sandbox

REPO = "acme/api"


def _app(sandbox: Sandbox) -> App:
    app = create_test_app()
    app.use_agents(sandbox.clients(retry=RetryPolicy.no_retries()))
    return app


async def test_a_local_handler_comments_on_github_and_linear_once_across_a_retry() -> None:
    sandbox = Sandbox()
    app = _app(sandbox)
    sandbox.github.create_issue(REPO, "It crashes")
    linear_issue = sandbox.linear.create_issue("Add login")
    keys: list[str] = []

    @app.on("ticket.opened", retry=RetryPolicy(initial_interval=0.01, maximum_attempts=3))
    async def answer(event: Event, ctx: HandlerContext) -> None:
        keys.append(ctx.idempotency_key)
        await ctx.agents.github.create_issue_comment(
            REPO, 1, "Looking", idempotency_key=ctx.idempotency_key
        )
        await ctx.agents.linear.create_comment(
            linear_issue["id"], "Looking", idempotency_key=ctx.idempotency_key
        )
        if ctx.attempt == 1:
            raise ConnectionError("lost the connection after acting")

    async with app:
        await app.publish(Event(type="ticket.opened"))
        await app.drain()
        letters = await app.dead_letters.list()

    assert letters == []
    assert len(keys) == 2
    assert "<locals>" in keys[0]  # the very key that used to be refused
    github_comments = list(sandbox.github.repo(REPO).comments.values())
    assert [c["body"].split("\n\n<!--")[0] for c in github_comments] == ["Looking"]
    assert find_marker(github_comments[0]["body"]) == platform_key(keys[0])
    linear_comments = [c for c in sandbox.linear.comments.values() if c.get("body") == "Looking"]
    assert len(linear_comments) == 1
    assert linear_comments[0]["id"] == id_for_key(keys[0], "linear:comment")


@pytest.mark.parametrize(
    "key",
    [
        "tests.x.f.<locals>.h:0193",
        "step with spaces",
        "tab\there",
        "é" * 300,
        "a" * 201,
        "-->",
        "<!-- x -->",
    ],
)
def test_any_key_maps_into_the_marker_alphabet_and_stays_put(key: str) -> None:
    mapped = platform_key(key)
    assert mapped != key
    assert platform_key(mapped) == mapped
    assert len(mapped) <= 200
    assert not any(c.isspace() or c in "<>" for c in mapped)
    assert find_marker(with_marker("hi", key)) == mapped
    assert id_for_key(key, "s") == id_for_key(mapped, "s")


def test_safe_keys_are_kept_and_distinct_keys_stay_distinct() -> None:
    assert platform_key("announce:0193abc") == "announce:0193abc"  # old markers still match
    assert platform_key("a<b") != platform_key("a>b")
    assert platform_key("x" * 201) != platform_key("x" * 202)
    with pytest.raises(ValueError, match="non-empty"):
        platform_key("")
