"""The hostile-input-safe JSON parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contexten.exceptions import MalformedPayload
from contexten.ingress.jsonsafe import INT_MAX, INT_MIN, MAX_DEPTH, check_limits, loads_object


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """An object whose deepest container is at ``depth`` (the top object is depth 1)."""
    return b'{"a":' + b"[" * (depth - 1) + leaf + b"]" * (depth - 1) + b"}"


def test_depth_limit_is_exact() -> None:
    assert loads_object(nested(MAX_DEPTH))
    with pytest.raises(MalformedPayload, match="deeper than 64"):
        loads_object(nested(MAX_DEPTH + 1))
    with pytest.raises(MalformedPayload, match="deeper"):  # empty innermost container
        loads_object(b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    with pytest.raises(MalformedPayload, match="deeper"):
        loads_object(b'{"a":' + b'{"b":' * 70 + b"1" + b"}" * 70 + b"}")


def test_extreme_depth_never_recurses_in_python() -> None:
    with pytest.raises(MalformedPayload):
        loads_object(nested(1_000_000))


@pytest.mark.parametrize("value", [INT_MIN, INT_MAX, 0, -1, 2**63 - 1])
def test_64_bit_integers_are_accepted(value: int) -> None:
    assert loads_object(json.dumps({"n": [value]}).encode()) == {"n": [value]}


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"n": INT_MAX + 1}).encode(),
        json.dumps({"n": INT_MIN - 1}).encode(),
        b'{"n": ' + b"9" * 100 + b"}",
        b'{"n": ' + b"9" * 4300 + b"}",
        b'{"n": -' + b"9" * 100_000 + b"}",
        b'{"n": 1e999}',
    ],
)
def test_huge_numbers_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedPayload):
        loads_object(raw)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "malformed"),
        (b"{", "malformed"),
        (b'{"a": 1,}', "malformed"),
        (b"{'a': 1}", "malformed"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": "\\udc00"}', "malformed"),
        (b'{"a": Infinity}', "malformed"),
        (b"[1]", "an array"),
        (b'"s"', "a string"),
        (b"1.5", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_malformed_inputs(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedPayload, match=why):
        loads_object(raw)


def test_errors_never_echo_the_input() -> None:
    secret_looking = b'{"token": "ghp_supersecretvalue", "x": [' + b"[" * 100 + b"}"
    with pytest.raises(MalformedPayload) as info:
        loads_object(secret_looking)
    assert "supersecret" not in str(info.value)


def test_real_payloads_round_trip(github_fixtures: Path) -> None:
    for path in sorted(github_fixtures.glob("*/*/*.json"))[:50]:
        raw = path.read_bytes()
        assert loads_object(raw) == json.loads(raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_every_plain_json_object_is_accepted_unchanged(value: dict[str, Any]) -> None:
    assert loads_object(json.dumps(value).encode()) == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_malformed(raw: bytes) -> None:
    try:
        value = loads_object(raw)
    except MalformedPayload:
        return
    assert isinstance(value, dict)
    check_limits(value)


def _depth_first_verdict(value: Any, max_depth: int) -> str | None:
    """The walk check_limits did before it went level by level: the first violation's message
    in depth-first order (None: none). Kept here as the reference the faster walk must match."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > max_depth:
            return f"JSON nests deeper than {max_depth}"
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is dict or kind is list:
                if item:
                    stack.append((item, depth + 1))
                elif depth + 1 > max_depth:
                    return f"JSON nests deeper than {max_depth}"
            elif kind is int and not INT_MIN <= item <= INT_MAX:
                return "JSON integer outside 64 bits"
    return None


limit_probes = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([INT_MIN - 1, INT_MIN, -1, 0, 1, INT_MAX, INT_MAX + 1, 10**30])
    | st.just("s"),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=2), limit_probes, max_size=3), st.integers(1, 6))
def test_limits_refuse_exactly_what_the_depth_first_walk_refused(
    value: dict[str, Any], max_depth: int
) -> None:
    # Small limits and integers at the 64-bit edges: every boundary, and documents breaking
    # both limits (the message must name the violation the depth-first walk meets first).
    _assert_same_verdict(value, max_depth)


def _assert_same_verdict(value: Any, max_depth: int) -> None:
    """check_limits accepts what the depth-first walk accepts, and refuses the rest with its
    message."""
    expected = _depth_first_verdict(value, max_depth)
    if expected is None:
        check_limits(value, max_depth)
    else:
        with pytest.raises(MalformedPayload) as info:
            check_limits(value, max_depth)
        assert str(info.value) == expected


def test_limits_of_the_real_payloads_are_within(github_fixtures: Path) -> None:
    for path in sorted(github_fixtures.glob("*/*/*.json")):
        value = json.loads(path.read_bytes())
        assert _depth_first_verdict(value, MAX_DEPTH) is None
        check_limits(value)
        for max_depth in (2, 3, 4):  # and refused at small limits as the reference refuses
            _assert_same_verdict(value, max_depth)
