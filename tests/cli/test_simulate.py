"""``contexten simulate``: requests signed as each platform signs them, accepted by the real
receivers, and the command against a served App over loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from click.testing import CliRunner, Result

from contexten import App, Event, HandlerContext
from contexten.cli import cli
from contexten.cli.simulate import build_request, github_request, linear_request, slack_request
from contexten.clock import WallClock
from contexten.exceptions import ConfigurationError, SignatureInvalid
from contexten.ingress import IngressConfig
from contexten.ingress.receivers import receive_github, receive_linear, receive_slack
from contexten.testing import VirtualClock
from ingress._serving import serving  # the sibling test package (tests/ is on sys.path)
from ingress._support import (
    GITHUB_SECRET,
    HANG_GUARD,
    LINEAR_SECRET,
    SLACK_SECRET,
    linear_payload,
    make_config,
    pull_request_payload,
    slack_event_payload,
)

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
SECRETS_ENV = {
    "CONTEXTEN_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    "CONTEXTEN_LINEAR_WEBHOOK_SECRET": LINEAR_SECRET,
    "CONTEXTEN_SLACK_SIGNING_SECRET": SLACK_SECRET,
}


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture
def config() -> IngressConfig:
    return make_config(clock=VirtualClock(NOW))


def test_github_is_signed_and_normalised_like_a_real_delivery(config: IngressConfig) -> None:
    payload = pull_request_payload(5)
    payload.pop("action")
    request = github_request("pull_request.opened", payload, secret=GITHUB_SECRET)
    assert request.path == "/webhooks/github"
    assert request.headers["X-GitHub-Event"] == "pull_request"
    assert request.headers["X-GitHub-Delivery"] == request.delivery
    accepted = receive_github(_lower(request.headers), request.body, config)
    assert accepted.event is not None
    assert accepted.event.type == "github.pull_request.opened"
    assert accepted.event.delivery_id == request.delivery
    assert "action" not in payload  # the caller's payload is left alone

    closed = github_request("pull_request.opened", payload, secret=GITHUB_SECRET, action="closed")
    assert json.loads(closed.body)["action"] == "closed"
    assert closed.delivery != request.delivery  # every run is a new delivery
    fixed = github_request("push", {"ref": "refs/heads/x"}, secret=GITHUB_SECRET, delivery="d-1")
    assert fixed.headers["X-GitHub-Delivery"] == "d-1"


def test_github_touch_makes_a_new_change_for_semantic_dedup(config: IngressConfig) -> None:
    payload = pull_request_payload(5)
    plain = github_request("pull_request", payload, secret=GITHUB_SECRET)
    again = github_request("pull_request", payload, secret=GITHUB_SECRET)
    touched = github_request("pull_request", payload, secret=GITHUB_SECRET, touch=True, now=NOW)
    keys = [
        receive_github(_lower(r.headers), r.body, config).dedup_key for r in (plain, again, touched)
    ]
    assert keys[0] == keys[1]  # same object, same updated_at: the platform's own duplicate
    assert keys[2] != keys[0]
    assert json.loads(touched.body)["pull_request"]["updated_at"] == "2031-05-06T07:08:09Z"


def test_a_wrong_secret_does_not_verify(config: IngressConfig) -> None:
    request = github_request("push", {"ref": "refs/heads/x"}, secret="not-the-secret")
    with pytest.raises(SignatureInvalid):
        receive_github(_lower(request.headers), request.body, config)


@pytest.mark.parametrize(
    ("event", "action", "expected_type", "linear_type"),
    [
        ("issue.updated", None, "linear.issue.updated", "Issue"),
        ("Issue.update", None, "linear.issue.updated", "Issue"),
        ("Issue", "create", "linear.issue.created", "Issue"),
        ("comment.created", None, "linear.comment.created", "Comment"),
        ("issue_label.removed", None, "linear.issue_label.removed", "IssueLabel"),
    ],
)
def test_linear_is_signed_timestamped_and_typed(
    config: IngressConfig, event: str, action: str | None, expected_type: str, linear_type: str
) -> None:
    stale = linear_payload(timestamp_ms=1)  # refreshed to now: a stale stamp is refused
    request = linear_request(event, stale, secret=LINEAR_SECRET, action=action, now=NOW)
    body = json.loads(request.body)
    assert body["webhookTimestamp"] == int(NOW.timestamp() * 1000)
    assert body["type"] == linear_type
    assert request.headers["Linear-Event"] == linear_type
    assert request.headers["Linear-Delivery"] == request.delivery
    accepted = receive_linear(_lower(request.headers), request.body, config)
    assert accepted.event is not None
    assert accepted.event.type == expected_type
    assert accepted.event.delivery_id == request.delivery


def test_slack_events_are_wrapped_signed_and_fresh(config: IngressConfig) -> None:
    inner = {"user": "U1", "text": "hi", "ts": "1.2", "channel": "C1"}
    request = slack_request("app_mention", inner, secret=SLACK_SECRET, now=NOW)
    body = json.loads(request.body)
    assert body["type"] == "event_callback"
    assert body["event"]["type"] == "app_mention"
    assert body["event_id"] == request.delivery
    assert request.headers["X-Slack-Request-Timestamp"] == str(int(NOW.timestamp()))
    accepted = receive_slack(_lower(request.headers), request.body, config)
    assert accepted.event is not None
    assert accepted.event.type == "slack.app_mention"

    envelope = slack_event_payload(event_id="EvOld")
    retry = slack_request("message", envelope, secret=SLACK_SECRET, delivery="EvOld", now=NOW)
    assert json.loads(retry.body)["event_id"] == "EvOld"
    assert json.loads(retry.body)["event"]["type"] == "message"
    fresh = slack_request("message", envelope, secret=SLACK_SECRET, now=NOW)
    assert json.loads(fresh.body)["event_id"] != "EvOld"


def test_slack_interactivity_commands_and_url_verification(config: IngressConfig) -> None:
    action = slack_request(
        "block_actions",
        {"user": {"id": "U1"}, "actions": [{"action_id": "approve"}], "trigger_id": "t"},
        secret=SLACK_SECRET,
        now=NOW,
    )
    assert action.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(action.body.decode())
    assert json.loads(form["payload"][0])["type"] == "block_actions"
    accepted = receive_slack(_lower(action.headers), action.body, config)
    assert accepted.event is not None
    assert accepted.event.type == "slack.block_actions"

    command = slack_request(
        "command",
        {"command": "/deploy", "text": "prod", "user_id": "U1", "trigger_id": "t2"},
        secret=SLACK_SECRET,
        now=NOW,
    )
    assert parse_qs(command.body.decode())["command"] == ["/deploy"]
    accepted = receive_slack(_lower(command.headers), command.body, config)
    assert accepted.event is not None
    assert accepted.event.type == "slack.command"

    challenge = slack_request(
        "url_verification", {"challenge": "abc", "token": "x"}, secret=SLACK_SECRET, now=NOW
    )
    assert receive_slack(_lower(challenge.headers), challenge.body, config).reply == {
        "challenge": "abc"
    }


def test_options_that_do_not_apply_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="--touch"):
        build_request("slack", "message", {}, secret="s", touch=True)
    with pytest.raises(ConfigurationError, match="--action"):
        build_request("slack", "message", {}, secret="s", action="opened")


# -- the command against a served App --------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, list[Event]]]:
    app = App(f"sqlite:///{tmp_path / 'simulate.db'}")
    seen: list[Event] = []

    @app.on(["github.**", "linear.**", "slack.**"], name="record")
    async def record(event: Event, ctx: HandlerContext) -> None:
        seen.append(event)

    async with serving(app, make_config(clock=WallClock())) as (_, url):
        yield url, seen
        await app.drain(HANG_GUARD)


async def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    environment = {**SECRETS_ENV, **(env or {})}
    return await asyncio.to_thread(
        runner.invoke, cli, ["simulate", *args], env=environment, catch_exceptions=False
    )


def _write(tmp_path: Path, name: str, payload: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return str(path)


async def test_the_command_posts_to_a_running_server(
    served: tuple[str, list[Event]], tmp_path: Path
) -> None:
    url, seen = served
    pr = _write(tmp_path, "pr.json", pull_request_payload(9))
    result = await _run(["github", "pull_request.opened", pr, "--url", url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("HTTP 202 Accepted")
    assert '"status":"accepted"' in result.output

    duplicate = await _run(["github", "pull_request.opened", pr, "--url", url])
    assert duplicate.exit_code == 0, duplicate.output  # 200 is a 2xx: a duplicate is fine
    assert "HTTP 200" in duplicate.output
    assert '"status":"duplicate"' in duplicate.output

    issue = _write(tmp_path, "issue.json", linear_payload(timestamp_ms=1))
    assert (await _run(["linear", "issue.updated", issue, "--url", url])).exit_code == 0
    mention = _write(tmp_path, "mention.json", {"user": "U1", "text": "hi", "channel": "C1"})
    assert (await _run(["slack", "app_mention", mention, "--url", url])).exit_code == 0

    async with asyncio.timeout(HANG_GUARD):
        while len(seen) < 3:  # noqa: ASYNC110 - the handler list is the observable here
            await asyncio.sleep(0.01)
    assert sorted(e.type for e in seen) == [
        "github.pull_request.opened",
        "linear.issue.updated",
        "slack.app_mention",
    ]


async def test_refusals_exit_1(served: tuple[str, list[Event]], tmp_path: Path) -> None:
    url, _ = served
    pr = _write(tmp_path, "pr.json", pull_request_payload(9))
    wrong = await _run(
        ["github", "pull_request.opened", pr, "--url", url],
        env={"CONTEXTEN_GITHUB_WEBHOOK_SECRET": "not-the-servers"},
    )
    assert wrong.exit_code == 1
    assert "HTTP 401" in wrong.output

    unset = await _run(
        ["github", "pull_request.opened", pr, "--url", url],
        env={"CONTEXTEN_GITHUB_WEBHOOK_SECRET": ""},
    )
    assert unset.exit_code == 1
    assert "set CONTEXTEN_GITHUB_WEBHOOK_SECRET" in unset.output

    not_json = tmp_path / "bad.json"
    not_json.write_text("{nope")
    bad = await _run(["github", "push", str(not_json), "--url", url])
    assert bad.exit_code == 2
    assert "cannot read" in bad.output


async def test_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pr = _write(tmp_path, "pr.json", pull_request_payload(9))
    result = await _run(["github", "pull_request.opened", pr, "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "ConnectError" in result.output
