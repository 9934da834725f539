"""The public test kit: in-memory app, virtual clock, event capture, conformance suites."""

from contexten.testing.app import TestApp, create_test_app
from contexten.testing.capture import EventCapture

__all__ = ["EventCapture", "TestApp", "create_test_app"]
