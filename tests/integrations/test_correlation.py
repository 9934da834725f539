"""Work-item key extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contexten.integrations.correlation import (
    agent_run_ids,
    branch_identifiers,
    find_work_item,
    linear_identifiers,
    slack_thread_key,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ENG-123: fix login", ["ENG-123"]),
        ("Fixes ENG-1 and OPS-22, again ENG-1.", ["ENG-1", "OPS-22"]),
        ("(ENG-5)", ["ENG-5"]),
        ("[A1-9] done", ["A1-9"]),
        ("eng-123 lower case prose", []),
        ("UTF-8, SHA-256, ISO-8601, RFC-7231, CVE-2024-1234", []),
        ("ENG-0 and ENG-01", []),
        ("XENG-123x", []),
        ("E-1 is too short a key", []),
        ("https://linear.app/acme/issue/ENG-9/title", ["ENG-9"]),
        ("", []),
        (None, []),
    ],
)
def test_linear_identifiers_in_prose(text: str | None, expected: list[str]) -> None:
    assert linear_identifiers(text) == expected


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("alice/eng-123-fix-login", ["ENG-123"]),
        ("refs/heads/eng-7", ["ENG-7"]),
        ("codegen-bot/ops-42-rotate-keys", ["OPS-42"]),
        ("ENG-9-upper", ["ENG-9"]),
        ("fix-2-things", []),
        ("release-1-2", []),
        ("feature/v1-2", []),
        ("main", []),
        ("dependabot/npm_and_yarn/lodash-4.17.21", []),
    ],
)
def test_branch_identifiers(branch: str, expected: list[str]) -> None:
    assert branch_identifiers(branch) == expected


def test_team_keys_restrict_and_relax() -> None:
    assert linear_identifiers("see eng-12 and utf-8", team_keys={"eng"}) == ["ENG-12"]
    assert linear_identifiers("FOO-1 ENG-2", team_keys={"ENG"}) == ["ENG-2"]
    assert branch_identifiers("feat-eng-12-login", team_keys={"ENG"}) == ["ENG-12"]
    assert branch_identifiers("fix-2-things", team_keys={"ENG"}) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Agent run: https://codegen.com/agent/trace/12345", ["12345"]),
        ("agent run #77, then agent_run_id=78", ["77", "78"]),
        ("no runs here, ran 5 agents", []),
    ],
)
def test_agent_run_ids(text: str, expected: list[str]) -> None:
    assert agent_run_ids(text) == expected


def test_find_work_item_priorities() -> None:
    assert find_work_item(branches=["eng-1-x"], texts=["ENG-2"]) == "ENG-1"
    assert find_work_item(branches=["main", None], texts=[None, "body ENG-2", "ENG-3"]) == "ENG-2"
    assert find_work_item(texts=["codegen.com/agent/trace/9", "later ENG-4"]) == "ENG-4"
    assert find_work_item(texts=["codegen.com/agent/trace/9"]) == "agent_run/9"
    assert find_work_item() is None
    assert slack_thread_key("C1", "1.2") == "slack:C1:1.2"


def test_huge_text_is_bounded() -> None:
    text = "x" * 1_000_000 + " ENG-1"
    assert linear_identifiers(text) == []  # past the searched prefix


_PROBES = [
    "alice/eng-123-fix-login",
    "refs/heads/eng-7",
    "refs/heads/ENG-8-upper",
    "feat-eng-12-login",
    "ENG-0 then ENG-01 then UTF-8 then OPS-3",
    "see eng-12 and utf-8 and Hello-4",
    "fix-2-things",
    "release/v1-2",
    "main",
    "Agent run: https://codegen.com/agent/trace/12345 and ENG-9",
    "agent run #77, then agent_run_id=78",
    "x" * 100_001 + "-1 ENG-5",
    "",
]


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _first(found: list[str]) -> str | None:
    return found[0] if found else None


def test_find_work_item_answers_the_first_of_the_listing_functions(github_fixtures: Path) -> None:
    # find_work_item searches on its own (first match only, team keys normalised once,
    # strings without "-" skipped); its answer must stay the first of what the public
    # listing functions find, for every string of the real payloads and the probes above.
    strings = set(_PROBES)
    for path in sorted(github_fixtures.glob("*/*/*.json")):
        strings.update(_strings(json.loads(path.read_bytes())))
    for keys in (None, {"eng", " OPS "}, ("Hello",)):
        for text in sorted(strings):
            assert find_work_item(branches=[text], team_keys=keys) == _first(
                branch_identifiers(text, team_keys=keys)
            ), text[:200]
            runs = agent_run_ids(text)
            expected = _first(linear_identifiers(text, team_keys=keys)) or (
                f"agent_run/{runs[0]}" if runs else None
            )
            assert find_work_item(texts=[None, text], team_keys=keys) == expected, text[:200]
