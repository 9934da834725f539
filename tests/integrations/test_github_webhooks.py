"""GitHub webhook verification and normalisation, including every shared real payload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contexten.exceptions import MalformedPayload, SignatureInvalid
from contexten.integrations.github import webhooks as gh

from ._webhook_fixtures import github_fixture_files

SECRET = b"It's a Secret to Everybody"


def test_known_answer_signature() -> None:
    # The vector from GitHub's "Validating webhook deliveries" documentation.
    assert gh.sign("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    gh.verify(
        b"Hello, World!",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        [SECRET],
    )


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0", "not sha256"),
        ("sha256=" + "0" * 64, "mismatch"),
        ("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1", "mismatch"),
        ("sha256=ünïcødé", "mismatch"),
        ("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", "not sha256"),
    ],
)
def test_bad_signatures_are_refused(signature: str | None, reason: str) -> None:
    with pytest.raises(SignatureInvalid) as info:
        gh.verify(b"Hello, World!", signature, [SECRET])
    assert reason in str(info.value)
    if signature:
        assert signature not in str(info.value)
    assert "Secret" not in str(info.value)


def test_body_is_verified_byte_for_byte() -> None:
    with pytest.raises(SignatureInvalid):
        gh.verify(b"Hello, World! ", gh.sign(SECRET, b"Hello, World!"), [SECRET])


def test_no_secret_refuses_everything() -> None:
    with pytest.raises(SignatureInvalid, match="no webhook secret"):
        gh.verify(b"{}", gh.sign(b"", b"{}"), [])


def test_either_of_two_rotated_secrets_verifies() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    for secret in (b"old-secret", b"new-secret"):
        gh.verify(body, gh.sign(secret, body), [b"old-secret", b"new-secret"])
    with pytest.raises(SignatureInvalid):
        gh.verify(body, gh.sign(b"third", body), [b"old-secret", b"new-secret"])


# -- normalisation of the shared real payloads ------------------------------------------------


@pytest.mark.parametrize("path", github_fixture_files(), ids=lambda p: "/".join(p.parts[-3:]))
def test_every_real_payload_normalises_to_its_implied_type(path: Path) -> None:
    event_name = path.parent.name
    payload: dict[str, Any] = json.loads(path.read_bytes())
    action = payload.get("action")
    expected = f"github.{event_name}" + (f".{action}" if action is not None else "")

    event = gh.normalise(event_name, payload, delivery_id="d-1")

    assert event.type == expected
    assert event.source == "github"
    assert event.delivery_id == "d-1"
    assert event.data is payload
    sender = payload.get("sender")
    assert event.actor == (sender or {}).get("login")
    repo = (payload.get("repository") or {}).get("full_name")
    if repo is not None:
        assert event.subject is not None
        assert event.subject.startswith(repo)
    gh.dedup_key(event_name, "d-1", payload)  # never raises either


def test_the_shared_collection_is_complete(github_fixtures: Path) -> None:
    files = github_fixture_files()
    assert len(files) == 500
    hosts = {p.relative_to(github_fixtures).parts[0] for p in files}
    assert {"api.github.com", "github.ae"} <= hosts
    assert any(h.startswith("ghes-") for h in hosts)


def _load(github_fixtures: Path, rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((github_fixtures / rel).read_bytes())
    return data


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("api.github.com/pull_request/opened.payload.json", "Codertocat/Hello-World#2"),
        ("api.github.com/issues/opened.payload.json", "Codertocat/Hello-World#1"),
        ("api.github.com/issue_comment/created.payload.json", "Codertocat/Hello-World#1"),
        ("api.github.com/push/payload.json", "Codertocat/Hello-World:refs/tags/simple-tag"),
        (
            "api.github.com/check_run/completed.payload.json",
            "Codertocat/Hello-World@ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        ),
        ("api.github.com/release/published.payload.json", "Codertocat/Hello-World:refs/tags/0.0.1"),
        ("api.github.com/create/payload.json", "Codertocat/Hello-World:refs/tags/simple-tag"),
        ("api.github.com/star/created.payload.json", "Codertocat/Hello-World"),
    ],
)
def test_subjects(github_fixtures: Path, rel: str, expected: str) -> None:
    payload = _load(github_fixtures, rel)
    assert gh.subject(Path(rel).parent.name, payload) == expected


def test_subject_without_repository_falls_back_to_organisation() -> None:
    payload = {"action": "created", "organization": {"login": "octo-org"}}
    assert gh.subject("organization", payload) == "octo-org"
    assert gh.subject("meta", {}) is None


def test_action_outside_the_type_alphabet_is_made_safe() -> None:
    event = gh.normalise("repository_dispatch", {"action": "Deploy Now!"})
    assert event.type == "github.repository_dispatch.deploy_now_"
    assert event.data["action"] == "Deploy Now!"


def test_missing_event_name_is_malformed() -> None:
    with pytest.raises(MalformedPayload):
        gh.normalise("", {"action": "opened"})


def test_event_types_are_the_same_when_built_again() -> None:
    # Types are kept by (event name, action) once built: a second delivery gets the same
    # type, a blank name is refused however often it comes, and a blank or non-string
    # action still means no action.
    for _ in range(2):
        assert gh.event_type("Pull_Request", {"action": " Opened "}) == (
            "github.pull_request.opened"
        )
        assert gh.event_type("push", {"action": "  "}) == "github.push"
        assert gh.event_type("push", {"action": 3}) == "github.push"
        assert gh.event_type("push", {}) == "github.push"
        for blank in ("", "  "):
            with pytest.raises(MalformedPayload):
                gh.event_type(blank, {"action": "opened"})


# -- correlation ------------------------------------------------------------------------------


def _pr(head: str = "main", title: str = "A change", body: str | None = None) -> dict[str, Any]:
    return {
        "action": "opened",
        "number": 7,
        "pull_request": {
            "id": 1,
            "number": 7,
            "title": title,
            "body": body,
            "head": {"ref": head},
            "updated_at": "2024-01-01T00:00:00Z",
        },
        "repository": {"full_name": "octo/repo"},
        "sender": {"login": "alice"},
    }


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (_pr(head="alice/eng-123-fix-login"), "ENG-123"),
        (_pr(title="ENG-77: fix the login"), "ENG-77"),
        (_pr(body="Fixes OPS-9.\n\nUTF-8 everywhere"), "OPS-9"),
        (_pr(title="Use UTF-8 and SHA-256"), None),
        (_pr(body="Agent run: https://codegen.com/agent/trace/4242"), "agent_run/4242"),
        (_pr(head="codegen-bot/eng-5-x", body="codegen.com/agent/trace/1"), "ENG-5"),
        (_pr(head="eng-1-branch", title="ENG-2 in title"), "ENG-1"),
    ],
)
def test_pull_request_correlation(payload: dict[str, Any], expected: str | None) -> None:
    assert gh.normalise("pull_request", payload).correlation_id == expected


def test_push_correlates_by_branch_then_commit_messages() -> None:
    payload = {
        "ref": "refs/heads/main",
        "commits": [{"message": "chore: bump"}, {"message": "ENG-404: handle missing page"}],
        "repository": {"full_name": "octo/repo"},
    }
    assert gh.normalise("push", payload).correlation_id == "ENG-404"
    payload["ref"] = "refs/heads/web-12-redesign"
    assert gh.normalise("push", payload).correlation_id == "WEB-12"


def test_team_keys_make_matching_exact() -> None:
    payload = _pr(title="UTF-8 fix for eng-12")
    assert gh.normalise("pull_request", payload, team_keys={"ENG"}).correlation_id == "ENG-12"
    assert gh.normalise("pull_request", payload, team_keys={"OPS"}).correlation_id is None


# -- semantic dedup ---------------------------------------------------------------------------


def test_same_change_from_two_hooks_has_one_key() -> None:
    repo_hook = _pr()
    app_hook = {**_pr(), "installation": {"id": 99}}
    assert gh.dedup_key("pull_request", "delivery-a", repo_hook) == gh.dedup_key(
        "pull_request", "delivery-b", app_hook
    )
    assert gh.dedup_key("pull_request", "a", repo_hook).startswith("github:sem:")


def test_distinct_changes_in_the_same_second_have_distinct_keys() -> None:
    one = {**_pr(), "action": "labeled", "label": {"id": 1, "name": "bug"}}
    two = {**_pr(), "action": "labeled", "label": {"id": 2, "name": "agent"}}
    assert gh.dedup_key("pull_request", "a", one) != gh.dedup_key("pull_request", "b", two)
    later = _pr()
    later["pull_request"] = {**later["pull_request"], "updated_at": "2024-01-01T00:00:01Z"}
    assert gh.dedup_key("pull_request", "a", _pr()) != gh.dedup_key("pull_request", "b", later)
    closed = {**_pr(), "action": "closed"}
    assert gh.dedup_key("pull_request", "a", _pr()) != gh.dedup_key("pull_request", "b", closed)


def test_payloads_without_an_updatable_object_use_the_delivery_id() -> None:
    push = {"ref": "refs/heads/main", "after": "abc", "repository": {"full_name": "o/r"}}
    assert gh.dedup_key("push", "72d3162e", push) == "github:72d3162e"
    assert gh.semantic_key("ping", {"zen": "x", "hook_id": 1}) is None
