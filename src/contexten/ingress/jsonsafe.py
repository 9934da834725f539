"""Parse JSON from the outside world without letting it hurt the process.

:func:`loads_object` accepts exactly what an event's data may hold and refuses the rest with
:class:`~contexten.exceptions.MalformedPayload` (a 400), fast:

* malformed JSON, invalid UTF-8 (also in escapes: lone surrogates), NaN and infinities;
* anything but an object at the top;
* nesting deeper than ``max_depth`` (64): deep documents cost stack and time in every consumer;
* integers outside 64 bits (which also covers "integers of thousands of digits", a known
  CPU-exhaustion vector): the event codec only round-trips integers within 64 bits, and no
  platform sends bigger ones.

How, and why it is fast: msgspec decodes in C (a 28 KB GitHub payload in ~30 us, 25 MB in
~60 ms); it refuses integers beyond 4,300 digits itself, and it stops at the interpreter's
recursion limit, so a document nested a million deep never reaches Python. One iterative
walk over the containers then checks the depth and the integers (~20 us for 28 KB).
A cheap scan before decoding was measured and rejected: a regex pass that skips string
contents costs more than decoding (0.1-2 s for 25 MB of short strings), and so do byte
counts that would let the walk be skipped (brackets for the depth, runs of digits for the
integers: a push's hex commit ids are full of the latter).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from contexten.exceptions import MalformedPayload

__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "check_limits", "loads_object"]

MAX_DEPTH: Final = 64
"""Containers nested deeper than this are refused (the top-level object is depth 1)."""
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
"""Integers outside ``[INT_MIN, INT_MAX]`` (signed and unsigned 64-bit) are refused."""

_decoder: Final = msgspec.json.Decoder()


def check_limits(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`MalformedPayload` if ``value`` nests deeper than ``max_depth`` or holds an
    integer outside 64 bits. Iterative: it never recurses, whatever the input.

    Acceptable values (all of them, in practice) take one walk, :func:`_within_limits`, level
    by level; only a refused one is walked again in the original order, so that the message
    says what that order meets first (the depth or the integer), as it always has.
    """
    if not _within_limits(value, max_depth):
        _refuse(value, max_depth)


def _within_limits(value: Any, max_depth: int) -> bool:
    """Whether ``value`` passes :func:`check_limits`, walked one nesting level at a time.

    Every container of a level is in the level's list (empty ones too: they count as a level
    of their own), so the depth is checked once per level instead of once per container, and
    no (container, depth) pair is built. ~25-30% cheaper than the walk in :func:`_refuse`
    on GitHub's payloads; it is the check of every webhook.
    """
    dict_, list_, int_ = dict, list, int
    lowest, highest = INT_MIN, INT_MAX
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > max_depth:
            return False
        below: list[Any] = []
        hold = below.append
        for container in level:
            for item in container.values() if type(container) is dict_ else container:
                kind = type(item)
                if kind is dict_ or kind is list_:
                    hold(item)
                elif kind is int_ and (item < lowest or item > highest):
                    return False
        level = below
        depth += 1
    return True


def _refuse(value: Any, max_depth: int) -> None:
    """Raise for the first violation the depth-first walk meets (the message says which)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > max_depth:
            raise MalformedPayload(f"JSON nests deeper than {max_depth}")
        items = container.values() if type(container) is dict else container
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                if item:
                    stack.append((item, depth + 1))
                elif depth + 1 > max_depth:
                    raise MalformedPayload(f"JSON nests deeper than {max_depth}")
            elif kind is int and not INT_MIN <= item <= INT_MAX:
                raise MalformedPayload("JSON integer outside 64 bits")


def loads_object(
    raw: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """Decode ``raw`` as a JSON object, within the limits in the module docstring.

    Raises:
        MalformedPayload: the input is not acceptable; the message says why (never echoing
            the input).
    """
    try:
        value = _decoder.decode(raw)
    except RecursionError:
        raise MalformedPayload(f"JSON nests deeper than {max_depth}") from None
    except msgspec.ValidationError:  # msgspec's own integer and float range checks
        raise MalformedPayload("JSON number out of range") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise MalformedPayload("malformed JSON or invalid UTF-8") from None
    if type(value) is not dict:
        raise MalformedPayload(f"JSON top level must be an object, not {_json_kind(value)}")
    check_limits(value, max_depth)
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"
