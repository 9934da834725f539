"""The curated public API is pinned: a change to it is a deliberate edit of this file."""

from __future__ import annotations

import inspect

import contexten
import contexten.exceptions
import contexten.testing

PUBLIC = {
    "App",
    "ContextenError",
    "Event",
    "HandlerContext",
    "NonRetryableError",
    "RetryPolicy",
    "StateMachine",
    "Subscription",
    "Transition",
    "Workflow",
    "WorkflowHandle",
}

TESTING = {
    "EventCapture",
    "Replayer",
    "TestApp",
    "VirtualClock",
    "check_replays",
    "create_test_app",
    "export_history",
    "load_history",
    "save_history",
}


def test_top_level_exports_are_pinned() -> None:
    assert set(contexten.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(contexten, name).__doc__, f"{name} has no docstring"


def test_testing_kit_exports_are_pinned() -> None:
    assert set(contexten.testing.__all__) == TESTING


def test_every_exception_descends_from_the_root_and_is_drawn_in_the_tree() -> None:
    tree = inspect.getdoc(contexten.exceptions) or ""
    for name in contexten.exceptions.__all__:
        cls = getattr(contexten.exceptions, name)
        assert issubclass(cls, contexten.exceptions.ContextenError), name
        assert name in tree, f"{name} is missing from the tree in exceptions.py's docstring"
