"""Every action the clients can send, checked against the platforms' published descriptions.

The actions are found by introspection (every :class:`Action` in the four platform modules'
``__all__``), so a new action is covered, or this test fails asking for its arguments. Each
runs against the sandbox through a :class:`CheckingTransport`, then its undo runs; every
request must be one the platform's description accepts. The second pass answers every
nullable field with ``null`` (the leanest answer the platform may give), and the undos must
still send valid requests. Webhooks the sandbox sends are checked against the platforms'
payload schemas.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import pytest

from contexten.events import Event
from contexten.integrations import codegen, github, linear, slack
from contexten.integrations.action import Action
from contexten.integrations.client import PlatformClient, use_clients
from contexten.integrations.codegen import CodegenClient
from contexten.integrations.github import GitHubClient
from contexten.integrations.linear import LinearClient
from contexten.integrations.slack import SlackClient
from contexten.integrations.slack.client import JSON_METHODS
from contexten.resilience import RetryPolicy
from contexten.testing.sandbox import Sandbox
from contexten.testing.specs import (
    check_object,
    github_webhooks,
    linear_schema,
    slack_methods,
)
from contexten.testing.specs.transport import CheckingTransport

REPO = "acme/api"
MODULES = {"github": github, "linear": linear, "slack": slack, "codegen": codegen}


def all_actions() -> list[tuple[str, str, Action[..., Any]]]:
    found = []
    for platform, module in MODULES.items():
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, Action):
                found.append((platform, name, obj))
    return found


ACTIONS = all_actions()


@dataclass
class World:
    """Objects the actions act on, made in the sandbox directly (no request to check)."""

    sandbox: Sandbox
    issue: int
    pr: int
    head_sha: str
    comment_id: int
    check_run_id: int
    linear_issue: dict[str, Any]
    channel: str
    ts: str
    run_id: int
    linear_comment_id: str


def make_world(sandbox: Sandbox) -> World:
    gh = sandbox.github
    repo = gh.repo(REPO)
    issue = gh.create_issue(REPO, "Login is broken", "Steps: ...")
    gh.add_labels(repo, issue["number"], {"labels": ["bug"]})
    head = f"eng-1-{sandbox.core.next_id()}"
    _, pr = gh.create_pull(repo, {"title": "ENG-1 Fix login", "head": head, "base": "main"})
    _, comment = gh.create_comment(repo, issue["number"], {"body": "On it"})
    _, check = gh.create_check(repo, {"name": "ci", "head_sha": pr["head"]["sha"]})
    lin = sandbox.linear.create_issue("Fix login", "Users cannot log in", labels=["bug"])
    channel = sandbox.slack.channel_id("eng") or sandbox.slack.add_channel("eng")
    sandbox.slack.add_usergroup("S0LEADS", ["U0ADA"])
    message = sandbox.slack.post(channel, "Deploy?")
    run = sandbox.codegen.start_run("ENG-1 Fix login", {})
    lin_comment = sandbox.linear.op_commentCreate({"input": {"issueId": lin["id"], "body": "Hi"}})
    return World(
        sandbox,
        issue["number"],
        pr["number"],
        pr["head"]["sha"],
        comment["id"],
        check["id"],
        lin,
        channel,
        message["ts"],
        run["id"],
        lin_comment["comment"]["id"],
    )


def arguments(platform: str, name: str, world: World) -> tuple[list[Any], dict[str, Any]]:
    """The arguments to call ``platform.name`` with, read from its signature's names."""
    on_pr = "pull_request" in name or "reviewers" in name
    by_name: dict[str, Any] = {
        "repo": REPO,
        "number": world.pr if on_pr else world.issue,
        "labels": ["bug", "agent"] if platform == "linear" else ["triage"],
        "label": "bug",
        "body": "Looks good",
        "comment_id": world.comment_id,
        "check_run_id": world.check_run_id,
        "name": "contexten" if platform == "github" else "eyes",
        "head_sha": world.head_sha,
        "sha": world.head_sha,
        "context": "contexten/review",
        "description": "All checks passed",
        "target_url": "https://example.com/run/1",
        "title": "ENG-2 Add SSO",
        "head": f"eng-2-{world.sandbox.core.next_id()}",
        "base": "main",
        "draft": True,
        "reviewers": ["ada"],
        "team_reviewers": None,
        "merge_method": "squash",
        "issue_id": world.linear_issue["id"],
        "team_id": world.sandbox.linear.team["id"],
        "assignee_id": world.sandbox.linear.human["id"],
        "channel": world.channel,
        "ts": world.ts,
        "text": "Ready for review",
        "blocks": None,
        "thread_ts": None,
        "request_id": "approval-1",
        "prompt": "ENG-1 Fix login",
        "repo_id": None,
        "metadata": {"correlation_id": "ENG-1"},
        "model": None,
        "agent_run_id": world.run_id,
        "event": Event(
            type="github.pull_request.closed",
            source="github",
            correlation_id=world.linear_issue["identifier"],
            data={"action": "closed", "pull_request": {"title": "x", "merged": True}},
        ),
    }
    special: dict[str, dict[str, Any]] = {
        "github.create_commit_status": {"state": "success"},
        "linear.move_issue": {"state": "In Progress"},
        "linear.close_linked_issue": {"state": "Done"},
        "linear.create_issue": {"state": "Todo", "description": "Single sign-on"},
        "codegen.create_agent_run": {"repo": REPO},
    }
    var_kw: dict[str, dict[str, Any]] = {
        "github.update_pull_request": {"title": "Renamed", "body": "Now described"},
        "github.update_check_run": {"status": "completed", "conclusion": "success"},
        "github.create_check_run": {"status": "in_progress"},
        "linear.update_issue": {"title": "Renamed", "priority": 2},
        "slack.post_message": {"unfurl_links": False},
    }
    key = f"{platform}.{name}"
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in inspect.signature(ACTION_BY_KEY[key]).parameters.values():
        if param.name in ("client", "idempotency_key"):
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(var_kw.get(key, {}))
            continue
        value = special.get(key, {}).get(param.name, by_name.get(param.name, inspect._empty))
        if value is inspect._empty:
            if param.default is not inspect._empty:
                continue
            raise AssertionError(f"{key}: add an argument for {param.name!r} to this test")
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[param.name] = value
        else:
            args.append(value)
    return args, kwargs


ACTION_BY_KEY = {f"{p}.{n}": a for p, n, a in ACTIONS}


async def _run(platform: str, name: str, action: Action[..., Any], *, lean: bool) -> list[str]:
    sandbox = Sandbox()
    world = make_world(sandbox)
    transport = CheckingTransport(sandbox.transport(), lean=lean, answers=not lean)
    args, kwargs = arguments(platform, name, world)
    async with sandbox.clients(transport=transport, retry=RetryPolicy.no_retries()) as clients:
        with use_clients(clients):
            result = await action(*args, idempotency_key=f"conformance:{name}", **kwargs)
            if action.undo is not None:
                await action.undo(*args, result=result, **kwargs)
    assert transport.checked, f"{platform}.{name} sent no request"
    return transport.problems


@pytest.mark.parametrize(
    ("platform", "name", "action"), ACTIONS, ids=[f"{p}.{n}" for p, n, _ in ACTIONS]
)
async def test_action_and_undo_send_what_the_platform_describes(
    platform: str, name: str, action: Action[..., Any]
) -> None:
    assert await _run(platform, name, action, lean=False) == []


@pytest.mark.parametrize(
    ("platform", "name", "action"), ACTIONS, ids=[f"{p}.{n}" for p, n, _ in ACTIONS]
)
async def test_with_every_nullable_field_null_the_requests_stay_valid(
    platform: str, name: str, action: Action[..., Any]
) -> None:
    assert await _run(platform, name, action, lean=True) == []


# -- client methods -------------------------------------------------------------------------

CLIENTS = {
    "github": GitHubClient,
    "linear": LinearClient,
    "slack": SlackClient,
    "codegen": CodegenClient,
}
# The raw escape hatches: what goes through them is whatever the caller sends.
RAW_METHODS = frozenset({"paginate", "graphql", "call", "read"})
# Methods that send nothing (they drop cached lookups): no request to check.
LOCAL_METHODS = frozenset({"invalidate"})


def client_methods() -> list[tuple[str, str]]:
    base = set(dir(PlatformClient))
    found = []
    for platform, cls in CLIENTS.items():
        for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if (
                not name.startswith("_")
                and name not in base
                and name not in RAW_METHODS | LOCAL_METHODS
            ):
                found.append((platform, name))
    return found


METHODS = client_methods()


def method_arguments(platform: str, name: str, fn: Any, world: World) -> dict[str, Any]:
    on_pr = "pull_request" in name or "reviewers" in name or name == "merge_pull_request"
    by_name: dict[str, Any] = {
        "repo": REPO,
        "number": world.pr if on_pr else world.issue,
        "labels": ["triage"],
        "label": "bug",
        "names": ["bug"],
        "body": "Looks good",
        "comment_id": world.linear_comment_id if platform == "linear" else world.comment_id,
        "check_run_id": world.check_run_id,
        "head_sha": world.head_sha,
        "sha": world.head_sha,
        "context": "contexten/review",
        "title": "ENG-3 Add SSO",
        "head": f"eng-3-{world.sandbox.core.next_id()}",
        "base": "main",
        "reviewers": ["ada"],
        "issue_id": world.linear_issue["id"],
        "team_id": world.sandbox.linear.team["id"],
        "channel": world.channel,
        "ts": world.ts,
        "text": "Ready",
        "prompt": "ENG-1 Fix login",
        "agent_run_id": world.run_id,
        "user": "U0ADA",
        "usergroup": "S0LEADS",
    }
    special: dict[str, dict[str, Any]] = {
        "github.set_issue_state": {"state": "closed"},
        "github.create_commit_status": {"state": "success"},
        "github.create_check_run": {"name": "ci"},
        "linear.workflow_state": {"name": "Todo"},
        "slack.add_reaction": {"name": "eyes"},
        "slack.remove_reaction": {"name": "eyes"},
        "linear.create_issue": {"title": "ENG-3 Add SSO"},
    }
    var_kw: dict[str, dict[str, Any]] = {
        "github.update_pull_request": {"title": "Renamed"},
        "github.update_check_run": {"status": "completed", "conclusion": "success"},
        "linear.update_issue": {"title": "Renamed"},
    }
    key = f"{platform}.{name}"
    kwargs: dict[str, Any] = {}
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(var_kw.get(key, {}))
            continue
        value = special.get(key, {}).get(param.name, by_name.get(param.name, inspect._empty))
        if value is inspect._empty:
            if param.default is not inspect._empty:
                continue
            raise AssertionError(f"{key}: add an argument for {param.name!r} to this test")
        kwargs[param.name] = value
    return kwargs


@pytest.mark.parametrize("lean", [False, True], ids=["answers", "lean"])
@pytest.mark.parametrize(("platform", "name"), METHODS, ids=[f"{p}.{n}" for p, n in METHODS])
async def test_client_method_sends_what_the_platform_describes(
    platform: str, name: str, lean: bool
) -> None:
    sandbox = Sandbox()
    world = make_world(sandbox)
    transport = CheckingTransport(sandbox.transport(), answers=not lean, lean=lean)
    async with sandbox.clients(transport=transport, retry=RetryPolicy.no_retries()) as clients:
        client: Any = clients.get(CLIENTS[platform])
        fn = getattr(type(client), name)
        await getattr(client, name)(**method_arguments(platform, name, fn, world))
    assert transport.checked, f"{platform}.{name} sent no request"
    assert transport.problems == []


def test_every_platform_has_actions_covered() -> None:
    assert {p for p, _, _ in ACTIONS} == set(MODULES)
    assert len(ACTIONS) >= 30


def test_the_slack_client_sends_json_exactly_where_slack_takes_it() -> None:
    table = slack_methods().methods
    for method in JSON_METHODS:
        assert table[method].json, f"{method} takes no JSON (Slack's SDK sends it as a form)"


# -- webhooks the sandbox sends -------------------------------------------------------------


async def _every_webhook(sandbox: Sandbox) -> None:
    """Drive the sandbox through every action (webhooks for our own changes included)."""
    for platform, name, action in ACTIONS:
        world = make_world(sandbox)
        args, kwargs = arguments(platform, name, world)
        async with sandbox.clients(retry=RetryPolicy.no_retries()) as clients:
            with use_clients(clients):
                result = await action(*args, **kwargs)
                if action.undo is not None:
                    await action.undo(*args, result=result, **kwargs)
    sandbox.codegen.finish_all()  # opens pull requests: webhooks from a third party


async def test_sandbox_webhooks_match_the_platforms_payload_schemas() -> None:
    sandbox = Sandbox()
    await _every_webhook(sandbox)
    schemas = github_webhooks()
    schema = linear_schema().schema
    kinds: set[tuple[str, str]] = set()
    problems: list[str] = []
    for delivery in sandbox.outbox:
        payload = delivery.json()
        if delivery.platform == "github":
            kinds.add((delivery.event, str(payload.get("action"))))
            problems += [f"{delivery.event}: {p}" for p in schemas.check(delivery.event, payload)]
        elif delivery.platform == "linear":
            kinds.add(("linear", f"{payload['type']}.{payload['action']}"))
            envelope = {**payload, "data": {}}
            problems += check_object(schema, "EntityWebhookPayload", envelope, "payload")
            problems += check_object(
                schema, f"{payload['type']}WebhookPayload", payload["data"], "data"
            )
    assert problems == []
    # The drive above reaches the deliveries the workflows depend on.
    assert {
        ("pull_request", "opened"),
        ("pull_request", "closed"),
        ("issue_comment", "created"),
        ("issues", "labeled"),
        ("linear", "Issue.update"),
        ("linear", "Comment.create"),
    } <= kinds


def test_a_pull_request_webhook_without_its_number_is_refused_by_the_schema() -> None:
    sandbox = Sandbox()
    sandbox.github.create_pull(
        sandbox.github.repo(REPO), {"title": "T", "head": "b", "base": "main"}
    )
    payload = json.loads(sandbox.outbox[-1].body)
    assert github_webhooks().check("pull_request", payload) == []
    del payload["number"]
    assert github_webhooks().check("pull_request", payload) != []
