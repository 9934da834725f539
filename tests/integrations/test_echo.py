"""Echo suppression: our own actions' webhooks are recognised, other people's are not."""

from __future__ import annotations

from contexten.events import Event
from contexten.integrations import github, slack
from contexten.integrations.action import ActionRecord, use_recorder
from contexten.integrations.client import ClientRegistry, use_clients
from contexten.integrations.echo import BotIdentity, EchoDetector, event_fingerprints
from contexten.testing.sandbox import Sandbox


def _event(platform: str, kind: str, payload: dict[str, object]) -> Event:
    return Event(type=f"{platform}.{kind}", source=platform, data=payload)


async def test_our_bot_is_recognised_as_the_actor(
    clients: ClientRegistry, sandbox: Sandbox
) -> None:
    sandbox.github.create_issue("acme/api", "Bug")
    identity = BotIdentity(
        github_logins=frozenset({sandbox.config.github_bot_login}),
        slack_bot_ids=frozenset({sandbox.config.slack_bot_id}),
    )
    detector = EchoDetector(identity)
    with use_clients(clients):
        await github.create_issue_comment("acme/api", 1, "hello")
        await slack.post_message("C0ENG", "hello")
    ours = sandbox.outbox[-2:]
    assert detector.is_echo(_event("github", "issue_comment.created", ours[0].json()))
    assert detector.is_echo(_event("slack", "message", ours[1].json()))
    human = sandbox.outbox[0].json()  # issues.opened by octocat
    assert not detector.is_echo(_event("github", "issues.opened", human))


async def test_recorded_actions_are_recognised_without_a_bot_identity(
    clients: ClientRegistry, sandbox: Sandbox
) -> None:
    sandbox.github.create_issue("acme/api", "Bug")
    detector = EchoDetector(BotIdentity())  # e.g. acting through a person's token
    records: list[ActionRecord] = []

    class Recorder:
        async def record(self, record: ActionRecord) -> None:
            records.append(record)
            detector.observe_event(record.to_event())  # as the App would, via the store

    with use_clients(clients), use_recorder(Recorder()):
        comment = await github.create_issue_comment("acme/api", 1, "hello", idempotency_key="k")
    (record,) = records
    assert record.event_type == "contexten.action.github.create_issue_comment"
    assert record.idempotency_key == "k"
    assert record.result["id"] == comment["id"]
    echo = _event("github", "issue_comment.created", sandbox.outbox[-1].json())
    assert event_fingerprints(echo) == set(record.fingerprints)
    assert detector.is_echo(echo)

    other = _event(
        "github",
        "issue_comment.created",
        {"comment": {"node_id": "IC_someone_else"}, "sender": {"login": "ada"}},
    )
    assert not detector.is_echo(other)


def test_fingerprints_expire() -> None:
    now = [0.0]
    detector = EchoDetector(BotIdentity(), ttl=10, clock=lambda: now[0])
    detector.observe(ActionRecord("linear", "create_comment", fingerprints=("linear:abc",)))
    event = _event("linear", "comment.created", {"data": {"id": "abc"}, "actor": {"id": "u1"}})
    assert detector.is_echo(event)
    now[0] = 11
    assert not detector.is_echo(event)


def test_identity_from_env() -> None:
    identity = BotIdentity.from_env(
        {"CONTEXTEN_GITHUB_BOT_LOGIN": "app[bot], other[bot]", "CONTEXTEN_SLACK_BOT_ID": "B1"}
    )
    assert identity.is_ours("github", "other[bot]")
    assert identity.is_ours("slack", "B1")
    assert not identity.is_ours("linear", "B1")
