"""Predicates over Linear events: what changed, which label came or went, where an issue moved.

Each factory returns a plain ``Event -> bool`` for ``where=`` filters::

    @app.workflow("implement-issue", on="linear.issue.updated", where=label_added("agent"))

They read the ``changes`` key the ingress adds to Linear events (``{field: {"from": old,
"to": new}}``, see :mod:`contexten.integrations.linear.webhooks`); :func:`changed` also works
on GitHub ``edited`` events, whose ``changes`` has the same shape. They are pure and cheap:
they run on the dispatcher's read path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from contexten.events.envelope import Event
from contexten.integrations.linear.webhooks import CHANGES_KEY

__all__ = ["changed", "label_added", "label_removed", "moved_to"]

EventPredicate = Callable[[Event], bool]


def _changes(event: Event) -> Mapping[str, Any]:
    found = event.data.get(CHANGES_KEY)
    return found if isinstance(found, Mapping) else {}


def _entity(event: Event) -> Mapping[str, Any]:
    found = event.data.get("data")
    return found if isinstance(found, Mapping) else {}


def changed(*fields: str) -> EventPredicate:
    """True when the event changed any of ``fields`` (``changed("stateId", "priority")``).

    Raises:
        ValueError: no field given.
    """
    if not fields:
        raise ValueError("changed() needs at least one field name")
    wanted = frozenset(fields)

    def check(event: Event) -> bool:
        return not wanted.isdisjoint(_changes(event))

    return check


def _label_ids(value: Any) -> set[str]:
    return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()


def _labels_by_id(event: Event) -> dict[str, str]:
    labels = _entity(event).get("labels")
    if isinstance(labels, Mapping):  # GraphQL connection shape: {"nodes": [...]}
        labels = labels.get("nodes")
    out: dict[str, str] = {}
    if isinstance(labels, list):
        for label in labels:
            if isinstance(label, Mapping) and isinstance(label.get("id"), str):
                out[label["id"]] = str(label.get("name", ""))
    return out


def _label_diff(event: Event) -> tuple[set[str], set[str]]:
    """Label ids (added, removed) by this event; nothing unless ``labelIds`` changed."""
    change = _changes(event).get("labelIds")
    if not isinstance(change, Mapping):
        return set(), set()
    before = _label_ids(change.get("from"))
    after = _label_ids(change.get("to"))
    if not after and "to" not in change:
        after = _label_ids(_entity(event).get("labelIds"))
    return after - before, before - after


def _matches_label(label: str, ids: set[str], names: Mapping[str, str]) -> bool:
    wanted = label.casefold()
    return any(i == label or names.get(i, "").casefold() == wanted for i in ids)


def _github_label(event: Event, action: str, label: str) -> bool:
    """Whether ``event`` is GitHub's ``labeled``/``unlabeled`` (``action``) for ``label``.

    GitHub names the one label that came or went in the payload's ``label`` (issues and
    pull requests alike); it matches by name (any case), id or node id.
    """
    if event.source != "github" or event.data.get("action") != action:
        return False
    found = event.data.get("label")
    if not isinstance(found, Mapping):
        return False
    name = found.get("name")
    if isinstance(name, str) and name.casefold() == label.casefold():
        return True
    return label in (str(found.get("id")), found.get("node_id"))


def label_added(label: str) -> EventPredicate:
    """True when this update added ``label`` (a label name, case-insensitive, or an id).

    Linear: names come from the entity's ``labels``, which Linear sends with issue webhooks.
    GitHub: an ``issues.labeled`` or ``pull_request.labeled`` event for that label.
    """

    def check(event: Event) -> bool:
        if event.source == "github":
            return _github_label(event, "labeled", label)
        added, _ = _label_diff(event)
        return bool(added) and _matches_label(label, added, _labels_by_id(event))

    return check


def label_removed(label: str) -> EventPredicate:
    """True when this update removed ``label`` (by id, or by name when the payload still
    names it: Linear's entity only lists the current labels); on GitHub, an ``unlabeled``
    event for that label."""

    def check(event: Event) -> bool:
        if event.source == "github":
            return _github_label(event, "unlabeled", label)
        _, removed = _label_diff(event)
        return bool(removed) and _matches_label(label, removed, _labels_by_id(event))

    return check


def moved_to(state: str) -> EventPredicate:
    """True when this update moved the issue to workflow state ``state`` (name, any case)."""
    wanted = state.casefold()

    def check(event: Event) -> bool:
        if "stateId" not in _changes(event):
            return False
        current = _entity(event).get("state")
        name = current.get("name") if isinstance(current, Mapping) else None
        return isinstance(name, str) and name.casefold() == wanted

    return check
