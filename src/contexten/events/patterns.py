"""Event-type patterns, the way NATS subjects match.

A pattern is dot-separated like a type: ``*`` matches exactly one segment, a trailing ``**``
matches one or more remaining segments (NATS's ``>``; ``>`` is accepted as a synonym), and
anything else matches literally. ``**`` alone matches every type.

    github.pull_request.*   github.pull_request.opened, not github.pull_request
    github.**               github.push, github.pull_request.opened
    linear.*.created        linear.issue.created, linear.comment.created

Patterns are compiled once; matching an exact pattern is one string comparison, and the
result for each type is memoised (the set of types a process sees is small).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from contexten.exceptions import InvalidPattern

__all__ = ["Pattern", "compile_pattern", "matches"]

_SEGMENT_RE: Final = re.compile(r"^[a-z0-9_][a-z0-9_\-]*$")
_CACHE_LIMIT: Final = 4096


class Pattern:
    """A compiled type pattern; call :meth:`matches` with an event type."""

    __slots__ = ("_cache", "_exact", "_prefix_len", "_segments", "_tail", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text:
            raise InvalidPattern("a pattern must be a non-empty string")
        segments = text.split(".")
        tail = segments[-1] in ("**", ">")
        if tail:
            segments = segments[:-1]
        for i, seg in enumerate(segments):
            if seg in ("**", ">"):
                raise InvalidPattern(f"pattern {text!r}: '{seg}' is only allowed at the end")
            if seg != "*" and not _SEGMENT_RE.match(seg):
                raise InvalidPattern(f"pattern {text!r}: bad segment #{i + 1} {seg!r}")
        self.text = text
        self._segments = tuple(segments)
        self._tail = tail
        self._prefix_len = len(segments)
        self._exact = None if tail or "*" in segments else text
        self._cache: dict[str, bool] = {}

    def matches(self, event_type: str) -> bool:
        """Whether ``event_type`` matches this pattern."""
        if self._exact is not None:
            return event_type == self._exact
        hit = self._cache.get(event_type)
        if hit is None:
            hit = self._match(event_type)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[event_type] = hit
        return hit

    def _match(self, event_type: str) -> bool:
        parts = event_type.split(".")
        if self._tail:
            if len(parts) <= self._prefix_len:
                return False
        elif len(parts) != self._prefix_len:
            return False
        return all(p == "*" or p == s for p, s in zip(self._segments, parts, strict=False))

    @property
    def is_exact(self) -> bool:
        """True when the pattern has no wildcard (it names one type)."""
        return self._exact is not None

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


@lru_cache(maxsize=1024)
def compile_pattern(text: str) -> Pattern:
    """Return the compiled :class:`Pattern` for ``text`` (cached)."""
    return Pattern(text)


def matches(patterns: str | Pattern | Iterable[str | Pattern], event_type: str) -> bool:
    """Whether ``event_type`` matches ``patterns`` (one pattern or any of several)."""
    if isinstance(patterns, Pattern):
        return patterns.matches(event_type)
    if isinstance(patterns, str):
        return compile_pattern(patterns).matches(event_type)
    return any(matches(p, event_type) for p in patterns)
