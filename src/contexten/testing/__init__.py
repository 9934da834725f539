"""The public test kit: in-memory app, virtual clock, event capture, conformance suites."""

from contexten.testing.app import TestApp, create_test_app
from contexten.testing.capture import EventCapture
from contexten.testing.clock import VirtualClock
from contexten.testing.replay import (
    Replayer,
    check_replays,
    export_history,
    load_history,
    save_history,
)

__all__ = [
    "EventCapture",
    "Replayer",
    "TestApp",
    "VirtualClock",
    "check_replays",
    "create_test_app",
    "export_history",
    "load_history",
    "save_history",
]
