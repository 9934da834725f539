"""Normalisation of GitHub's real webhook examples, against what it gave before it was sped up.

``fixtures/github_normalised.json`` holds, for each of the 500 shared examples, a digest of
what :func:`normalise` and :func:`dedup_key` returned for it, recorded with the
implementation before the receiver's CPU work was cut (issue 14). The examples name no work
item, so they are also run with every string replaced (by an upper-case identifier, a
Linear-style branch, an agent-run mention), each string a different number: the
correlation id then says which field the search took first, with and without team keys.
A digest that changes means the output changed.

Regenerate only for an intended change of output: ``CONTEXTEN_RECORD_GOLDEN=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contexten.integrations.github import webhooks as gh

from ._webhook_fixtures import GITHUB_WEBHOOKS, github_fixture_files

GOLDEN = Path(__file__).parent / "fixtures" / "github_normalised.json"
TEAM_KEYS = ("ENG", "octo", "Hello")


def _replace_strings(value: Any, make: Callable[[int], str], counter: list[int]) -> Any:
    """``value`` with every string (not keys) replaced by ``make(n)``, n counting from 1."""
    if isinstance(value, dict):
        return {k: _replace_strings(v, make, counter) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, make, counter) for v in value]
    if isinstance(value, str):
        counter[0] += 1
        return make(counter[0])
    return value


_VARIANTS: dict[str, Callable[[int], str]] = {
    "upper": lambda n: f"ENG-{n}",
    "branch": lambda n: f"feature/eng-{n}-work",
    "agent": lambda n: f"see agent run {n}",
    "prose": lambda n: f"nothing to see {n} UTF-8 here",
}


def _row(event_name: str, payload: dict[str, Any]) -> list[Any]:
    row: list[Any] = []
    for keys in (None, TEAM_KEYS):
        event = gh.normalise(event_name, payload, delivery_id="d-1", team_keys=keys)
        row.append([event.type, event.subject, event.actor, event.correlation_id])
    row.append(gh.dedup_key(event_name, "d-1", payload))
    for name, make in _VARIANTS.items():
        changed = _replace_strings(payload, make, [0])
        for keys in (None, TEAM_KEYS):
            row.append([name, gh.correlation_id(event_name, changed, team_keys=keys)])
    return row


def _digest(row: list[Any]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:24]


def normalised_digests() -> dict[str, str]:
    """Each example's relative path -> the digest of its row."""
    return {
        str(path.relative_to(GITHUB_WEBHOOKS)): _digest(
            _row(path.parent.name, json.loads(path.read_bytes()))
        )
        for path in github_fixture_files()
    }


@pytest.mark.usefixtures("github_fixtures")
def test_normalisation_of_the_real_examples_is_unchanged() -> None:
    digests = normalised_digests()
    assert len(digests) == 500
    if os.environ.get("CONTEXTEN_RECORD_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(digests, indent=0, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    changed = sorted(path for path in recorded if digests.get(path) != recorded[path])
    assert digests.keys() == recorded.keys()
    assert not changed, f"{len(changed)} examples normalise differently, e.g. {changed[:5]}"
