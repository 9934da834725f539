"""Type patterns, checked against an independent reference matcher (a regular expression)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contexten.events import Pattern, compile_pattern, matches
from contexten.exceptions import InvalidPattern

SEGMENTS = ["github", "pull_request", "opened", "push", "a", "b-c", "x_1"]
types = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map(".".join)
pattern_heads = st.lists(st.sampled_from([*SEGMENTS, "*", "*"]), max_size=4)
patterns = st.builds(
    lambda head, tail: ".".join(head + ([tail] if tail else [])) or "**",
    pattern_heads,
    st.sampled_from([None, "**", ">"]),
).filter(bool)


def reference(pattern: str, event_type: str) -> bool:
    """NATS-style matching as a regular expression: '*' one segment, trailing '**' the rest."""
    parts = pattern.split(".")
    tail = parts[-1] in ("**", ">")
    if tail:
        parts = parts[:-1]
    regex = r"\.".join("[^.]+" if p == "*" else re.escape(p) for p in parts)
    if tail:
        regex = regex + r"(\.[^.]+)+" if regex else r"[^.]+(\.[^.]+)*"
    return re.fullmatch(regex, event_type) is not None


@given(patterns, types)
def test_matches_like_the_reference(pattern: str, event_type: str) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.matches(event_type) == reference(pattern, event_type)
    assert compiled.matches(event_type) == reference(pattern, event_type)  # memoised answer


@given(types)
def test_a_type_matches_itself_and_double_star(event_type: str) -> None:
    assert compile_pattern(event_type).matches(event_type)
    assert compile_pattern(event_type).is_exact
    assert matches("**", event_type)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("github.pull_request.*", "github.pull_request.opened", True),
        ("github.pull_request.*", "github.pull_request", False),
        ("github.pull_request.*", "github.pull_request.opened.x", False),
        ("github.**", "github.push", True),
        ("github.**", "github.pull_request.opened", True),
        ("github.**", "github", False),
        ("github.>", "github.push", True),
        ("linear.*.created", "linear.comment.created", True),
        ("linear.*.created", "linear.created", False),
        ("github.push", "github.push", True),
        ("github.push", "github.pushed", False),
    ],
)
def test_documented_examples(pattern: str, event_type: str, expected: bool) -> None:
    assert compile_pattern(pattern).matches(event_type) is expected


@pytest.mark.parametrize("bad", ["", "a..b", "**.a", "a.**.b", "A.b", "a.*x", "a b", ".a", "a."])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPattern):
        Pattern(bad)


def test_matches_accepts_one_or_many_patterns() -> None:
    assert matches(["linear.**", compile_pattern("github.push")], "github.push")
    assert not matches(["linear.**", "slack.*"], "github.push")
    assert matches(Pattern("github.*"), "github.push")


def test_memo_stays_correct_past_its_limit() -> None:
    pattern = Pattern("t.*")
    for i in range(10_000):
        assert pattern.matches(f"t.s{i}")
        assert not pattern.matches(f"u.s{i}")


def test_patterns_compare_by_text() -> None:
    assert Pattern("a.*") == compile_pattern("a.*")
    assert len({Pattern("a.*"), Pattern("a.*"), Pattern("a.**")}) == 2
    assert compile_pattern("a.*") is compile_pattern("a.*")
