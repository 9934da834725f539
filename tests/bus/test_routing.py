"""Routing predicates for ``where=``."""

from __future__ import annotations

from contexten import Event
from contexten.routing import (
    all_of,
    any_of,
    data_equals,
    data_get,
    data_has,
    negate,
    source_is,
    subject_is,
    type_matches,
)

PR = Event(
    type="github.pull_request.closed",
    source="github",
    subject="octo/repo#7",
    data={"action": "closed", "pull_request": {"merged": True, "labels": ["agent"]}},
)


def test_data_paths() -> None:
    assert data_get(PR, "pull_request.merged") is True
    assert data_get(PR, "pull_request.missing", "default") == "default"
    assert data_get(PR, "action.deeper") is None
    assert data_has("pull_request.labels")(PR)
    assert not data_has("pull_request.title")(PR)
    assert data_equals("pull_request.merged", True)(PR)
    assert not data_equals("pull_request.merged", False)(PR)
    assert not data_equals("pull_request.title", None)(PR)  # missing is not None


def test_envelope_predicates() -> None:
    assert source_is("linear", "github")(PR)
    assert not source_is("slack")(PR)
    assert subject_is("octo/repo#7")(PR)
    assert type_matches("github.pull_request.*")(PR)
    assert not type_matches("github.push")(PR)


def test_combinators() -> None:
    merged = data_equals("pull_request.merged", True)
    from_slack = source_is("slack")
    assert all_of(merged, negate(from_slack))(PR)
    assert not all_of(merged, from_slack)(PR)
    assert any_of(from_slack, merged)(PR)
    assert not any_of(from_slack)(PR)
    assert all_of()(PR)
