"""GitHub client contract: against the sandbox, and against recorded GitHub responses."""

from __future__ import annotations

import pytest

from contexten.exceptions import (
    CircuitOpen,
    PlatformRequestError,
    PlatformUnavailable,
    RateLimited,
)
from contexten.integrations import github
from contexten.integrations.client import ClientRegistry, use_clients
from contexten.integrations.github import GitHubClient
from contexten.integrations.http import deadline
from contexten.integrations.idempotency import find_marker
from contexten.resilience.circuit_breaker import BreakerConfig, BreakerState
from contexten.testing import VirtualClock
from contexten.testing.sandbox import Sandbox

from .conftest import replay, settings

REPO = "acme/api"


@pytest.fixture
def gh(clients: ClientRegistry) -> GitHubClient:
    return clients.get(GitHubClient)


@pytest.fixture
def issue(sandbox: Sandbox) -> int:
    return int(sandbox.github.create_issue(REPO, "Login is broken")["number"])


async def test_comment_lifecycle(gh: GitHubClient, sandbox: Sandbox, issue: int) -> None:
    created = await gh.create_issue_comment(REPO, issue, "On it", idempotency_key="wf-1:s1")
    assert created["body"].startswith("On it")
    assert find_marker(created["body"]) == "wf-1:s1"
    assert created["user"]["type"] == "Bot"

    edited = await gh.update_issue_comment(REPO, created["id"], "Done")
    assert edited["body"].startswith("Done")
    assert find_marker(edited["body"]) == "wf-1:s1", "an edit keeps the idempotency marker"

    await gh.delete_issue_comment(REPO, created["id"])
    await gh.delete_issue_comment(REPO, created["id"])  # already gone: fine
    assert sandbox.github.repo(REPO).comments == {}
    events = [(d.event, d.json()["action"]) for d in sandbox.outbox if d.platform == "github"]
    assert events[-3:] == [
        ("issue_comment", "created"),
        ("issue_comment", "edited"),
        ("issue_comment", "deleted"),
    ]


async def test_retried_create_after_lost_response_makes_one_comment(
    gh: GitHubClient, sandbox: Sandbox, issue: int
) -> None:
    lost = sandbox.inject(
        "lost_response", platform="github", method="POST", path=f"/repos/{REPO}/issues"
    )
    comment = await gh.create_issue_comment(REPO, issue, "Hello", idempotency_key="wf-9:s2")
    assert lost.fired == 1, "the first response was lost after the comment was made"
    assert list(sandbox.github.repo(REPO).comments) == [comment["id"]]

    again = await gh.create_issue_comment(REPO, issue, "Hello", idempotency_key="wf-9:s2")
    assert again["id"] == comment["id"]
    assert len(sandbox.github.repo(REPO).comments) == 1


async def test_fresh_client_finds_the_marked_comment(
    sandbox: Sandbox, clock: VirtualClock, issue: int
) -> None:
    # A crash between the create and recording its result: a new process, same key.
    for _ in range(2):
        async with sandbox.clients(clock=clock) as registry:
            await registry.get(GitHubClient).create_issue_comment(
                REPO, issue, "Once", idempotency_key="wf-3:s1"
            )
    assert len(sandbox.github.repo(REPO).comments) == 1


async def test_lost_response_on_a_thread_of_1050_comments_makes_one_comment(
    gh: GitHubClient, sandbox: Sandbox, issue: int
) -> None:
    repo = sandbox.github.repo(REPO)
    for n in range(1050):
        sandbox.github.create_comment(repo, issue, {"body": f"comment {n}"}, author="octocat")
    lost = sandbox.inject(
        "lost_response", platform="github", method="POST", path=f"/repos/{REPO}/issues"
    )
    reads = sandbox.inject(  # a no-op fault that counts the lookups' reads
        "latency", platform="github", method="GET", path=f"/repos/{REPO}/issues", times=None
    )
    comment = await gh.create_issue_comment(REPO, issue, "Late", idempotency_key="wf-long:s1")
    assert lost.fired == 1
    assert find_marker(comment["body"]) == "wf-long:s1"
    assert len(repo.comments) == 1051, "the retry found the first attempt's comment"
    # The lookup before the create misses (all 11 pages of 100); the one after the lost
    # response finds the copy on the last page: page 1 for the Link header, then page 11.
    assert reads.fired == 11 + 2


async def test_an_older_marked_comment_deep_in_a_long_thread_is_found(
    sandbox: Sandbox, clock: VirtualClock, issue: int
) -> None:
    repo = sandbox.github.repo(REPO)
    for n in range(400):
        sandbox.github.create_comment(repo, issue, {"body": f"before {n}"}, author="octocat")
    async with sandbox.clients(clock=clock) as registry:
        first = await registry.get(GitHubClient).create_issue_comment(
            REPO, issue, "Once", idempotency_key="wf-deep:s1"
        )
    for n in range(650):
        sandbox.github.create_comment(repo, issue, {"body": f"after {n}"}, author="octocat")
    async with sandbox.clients(clock=clock) as registry:  # a new process, same key
        again = await registry.get(GitHubClient).create_issue_comment(
            REPO, issue, "Once", idempotency_key="wf-deep:s1"
        )
    assert again["id"] == first["id"]
    assert len(repo.comments) == 1051


async def test_a_retried_pull_request_is_found_among_many_for_its_branch(
    gh: GitHubClient, sandbox: Sandbox
) -> None:
    repo = sandbox.github.repo(REPO)
    for n in range(150):  # closed earlier attempts on the same branch
        _, pr = sandbox.github.create_pull(
            repo, {"title": f"old {n}", "head": "feat", "base": "main"}
        )
        pr["state"] = "closed"
    lost = sandbox.inject(
        "lost_response", platform="github", method="POST", path=f"/repos/{REPO}/pulls"
    )
    pr = await gh.create_pull_request(
        REPO, title="Feature", head="feat", base="main", idempotency_key="wf-pr:s1"
    )
    assert lost.fired == 1
    assert find_marker(pr["body"]) == "wf-pr:s1"
    assert sum(1 for i in repo.issues.values() if "head" in i) == 151


async def test_create_without_key_is_not_blindly_retried(
    gh: GitHubClient, sandbox: Sandbox, issue: int
) -> None:
    sandbox.inject("lost_response", platform="github", method="POST")
    with pytest.raises(PlatformUnavailable) as raised:
        await gh.create_issue_comment(REPO, issue, "Unkeyed")
    assert raised.value.maybe_applied
    assert len(sandbox.github.repo(REPO).comments) == 1


async def test_transient_errors_are_retried(gh: GitHubClient, sandbox: Sandbox, issue: int) -> None:
    fault = sandbox.inject("status", platform="github", status=502, times=2)
    labels = await gh.add_labels(REPO, issue, ["agent"])
    assert [label["name"] for label in labels] == ["agent"]
    assert fault.fired == 2


async def test_validation_error_fails_at_once_with_githubs_message(
    gh: GitHubClient, sandbox: Sandbox
) -> None:
    await gh.create_pull_request(REPO, title="Feature", head="feat", base="main")
    with pytest.raises(PlatformRequestError) as raised:
        await gh.create_pull_request(REPO, title="Feature again", head="feat", base="main")
    assert raised.value.status == 422
    assert "already exists" in str(raised.value)


async def test_primary_rate_limit_waits_for_the_reset(
    gh: GitHubClient, sandbox: Sandbox, clock: VirtualClock, issue: int
) -> None:
    sandbox.inject("rate_limit", platform="github", retry_after=30)
    start = clock.monotonic()
    await gh.add_labels(REPO, issue, ["bug"])
    assert clock.monotonic() - start >= 25


async def test_secondary_rate_limit_blocks_every_call(
    gh: GitHubClient, sandbox: Sandbox, clock: VirtualClock, issue: int
) -> None:
    sandbox.inject("rate_limit", platform="github", secondary=True, retry_after=40)
    start = clock.monotonic()
    await gh.add_labels(REPO, issue, ["bug"])
    assert clock.monotonic() - start >= 40
    assert gh.http.limiter.delay("search") == 0  # the block has passed for every bucket


async def test_rate_limit_past_the_deadline_raises(
    gh: GitHubClient, sandbox: Sandbox, clock: VirtualClock, issue: int
) -> None:
    sandbox.inject("rate_limit", platform="github", retry_after=120, times=None)
    with deadline(10, clock=clock), pytest.raises(RateLimited) as raised:
        await gh.add_labels(REPO, issue, ["bug"])
    assert raised.value.retry_after > 10


async def test_breaker_opens_fails_fast_and_recovers(
    sandbox: Sandbox, clock: VirtualClock, issue: int
) -> None:
    outage = sandbox.inject("status", platform="github", status=503, times=None)
    async with sandbox.clients(
        clock=clock, breaker=BreakerConfig(failure_threshold=3, reset_timeout=60)
    ) as registry:
        gh = registry.get(GitHubClient)
        with pytest.raises(PlatformUnavailable):
            await gh.get_pull_request(REPO, issue)
        assert gh.health().breaker.state is BreakerState.OPEN
        seen = outage.fired
        with pytest.raises(CircuitOpen):
            await gh.get_pull_request(REPO, issue)
        assert outage.fired == seen, "an open breaker sends nothing"
        assert not registry.health()["github"].available

        sandbox.faults.remove(outage)
        await clock.advance(61)
        assert gh.health().breaker.state is BreakerState.HALF_OPEN
        await gh.add_labels(REPO, issue, ["back"])
        assert gh.health().breaker.state is BreakerState.CLOSED


async def test_actions_and_compensations(clients: ClientRegistry, sandbox: Sandbox) -> None:
    with use_clients(clients):
        pr = await github.create_pull_request(
            REPO, title="Draft", head="agent/eng-1", base="main", draft=True, idempotency_key="k"
        )
        assert pr["draft"] is True
        await github.create_pull_request.undo(REPO, result=pr)
        assert sandbox.github.repo(REPO).issues[pr["number"]]["state"] == "closed"
        await github.create_pull_request.undo(REPO, result=pr)  # idempotent

        reviewers = await github.request_reviewers(REPO, pr["number"], ["ada"])
        assert [u["login"] for u in reviewers["requested_reviewers"]] == ["ada"]
        await github.request_reviewers.undo(REPO, pr["number"], ["ada"], result=reviewers)
        assert sandbox.github.repo(REPO).issues[pr["number"]]["requested_reviewers"] == []

        check = await github.create_check_run(
            REPO, name="contexten", head_sha=pr["head"]["sha"], idempotency_key="chk-1"
        )
        same = await github.create_check_run(
            REPO, name="contexten", head_sha=pr["head"]["sha"], idempotency_key="chk-1"
        )
        assert same["id"] == check["id"]
        cancelled = await github.create_check_run.undo(REPO, result=check)
        assert cancelled["conclusion"] == "cancelled"
        assert github.merge_pull_request.undo is None


async def test_delete_comment_action_keeps_the_comment_when_it_cannot_read_it(
    clients: ClientRegistry, sandbox: Sandbox, issue: int
) -> None:
    with use_clients(clients):
        comment = await github.create_issue_comment(REPO, issue, "On it")
        gone = await github.delete_issue_comment(REPO, comment["id"])
        assert gone["body"].startswith("On it"), "the undo needs the body"
        assert await github.delete_issue_comment(REPO, comment["id"]) == {"id": comment["id"]}

        kept = await github.create_issue_comment(REPO, issue, "Keep me")
        sandbox.inject("status", platform="github", method="GET", status=422, times=1)
        with pytest.raises(PlatformRequestError):
            await github.delete_issue_comment(REPO, kept["id"])
        assert kept["id"] in sandbox.github.repo(REPO).comments, "not deleted without its body"


# -- recorded GitHub responses ---------------------------------------------------------------


async def test_recorded_comment_is_returned_as_github_sent_it(
    recording_clock: VirtualClock,
) -> None:
    transport = replay("github_issue_comment_created")
    async with GitHubClient(
        settings("https://api.github.com"), transport=transport, clock=recording_clock
    ) as gh:
        comment = await gh.create_issue_comment("octocat/Hello-World", 1347, "Me too")
        assert comment["id"] == 1
        assert comment["user"]["login"] == "octocat"
        budget = gh.health().rate_limits["core"]
        assert budget.remaining == 4987
        assert budget.limit == 5000
    request = transport.seen[0]  # type: ignore[attr-defined]
    assert request.headers["authorization"] == "Bearer test-token"
    assert request.headers["x-github-api-version"] == "2022-11-28"


@pytest.mark.parametrize(
    ("recording", "wait"),
    [("github_primary_rate_limit", 30), ("github_secondary_rate_limit", 20)],
)
async def test_recorded_rate_limits_are_waited_out(
    recording_clock: VirtualClock, recording: str, wait: float
) -> None:
    transport = replay(recording, "github_pull_request")
    async with GitHubClient(
        settings("https://api.github.com"), transport=transport, clock=recording_clock
    ) as gh:
        pr = await gh.get_pull_request("octocat/Hello-World", 1347)
    assert pr["number"] == 1347
    assert recording_clock.monotonic() >= wait - 1
    assert len(transport.seen) == 2  # type: ignore[attr-defined]


async def test_recorded_validation_error(recording_clock: VirtualClock) -> None:
    transport = replay("github_validation_failed")
    async with GitHubClient(
        settings("https://api.github.com"), transport=transport, clock=recording_clock
    ) as gh:
        with pytest.raises(PlatformRequestError) as raised:
            await gh.create_pull_request(
                "octocat/Hello-World", title="x", head="new-feature", base="main"
            )
    assert raised.value.status == 422
    assert "A pull request already exists for octocat:new-feature" in str(raised.value)
    assert len(transport.seen) == 1, "a validation error is not retried"  # type: ignore[attr-defined]
