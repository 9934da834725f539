"""Routing predicates: small, composable ``where=`` filters.

A predicate is a plain callable ``Event -> bool`` (:data:`Predicate`); these helpers build the
common ones and combine them, so a subscription reads like a sentence::

    @app.on("github.pull_request.*",
            where=all_of(source_is("github"), data_equals("pull_request.merged", True)))

Predicates run on the dispatcher's read path for every event of a matching type: keep them
pure and cheap (no I/O).
"""

from __future__ import annotations

from typing import Any, Final

from contexten.bus.subscription import Predicate
from contexten.events.envelope import Event
from contexten.events.patterns import compile_pattern

__all__ = [
    "Predicate",
    "all_of",
    "any_of",
    "data_equals",
    "data_get",
    "data_has",
    "negate",
    "source_is",
    "subject_is",
    "type_matches",
]

_MISSING: Final = object()


def data_get(event: Event, path: str, default: Any = None) -> Any:
    """The value at dotted ``path`` in ``event.data`` (``"pull_request.number"``), or
    ``default`` when a step is missing or not a mapping."""
    value: Any = event.data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def all_of(*predicates: Predicate) -> Predicate:
    """True when every predicate is (True for none given)."""

    def check(event: Event) -> bool:
        return all(p(event) for p in predicates)

    return check


def any_of(*predicates: Predicate) -> Predicate:
    """True when at least one predicate is."""

    def check(event: Event) -> bool:
        return any(p(event) for p in predicates)

    return check


def negate(predicate: Predicate) -> Predicate:
    """True when ``predicate`` is False."""

    def check(event: Event) -> bool:
        return not predicate(event)

    return check


def type_matches(pattern: str) -> Predicate:
    """True for events whose type matches ``pattern`` (``"github.pull_request.*"``)."""
    compiled = compile_pattern(pattern)

    def check(event: Event) -> bool:
        return compiled.matches(event.type)

    return check


def source_is(*sources: str) -> Predicate:
    """True for events from one of ``sources``."""
    wanted = frozenset(sources)

    def check(event: Event) -> bool:
        return event.source in wanted

    return check


def subject_is(*subjects: str) -> Predicate:
    """True for events about one of ``subjects``."""
    wanted = frozenset(subjects)

    def check(event: Event) -> bool:
        return event.subject in wanted

    return check


def data_has(path: str) -> Predicate:
    """True when dotted ``path`` exists in the event's data."""

    def check(event: Event) -> bool:
        return data_get(event, path, _MISSING) is not _MISSING

    return check


def data_equals(path: str, value: Any) -> Predicate:
    """True when the value at dotted ``path`` in the event's data equals ``value``."""

    def check(event: Event) -> bool:
        found = data_get(event, path, _MISSING)
        return found is not _MISSING and bool(found == value)

    return check
