"""Conformance suites: one per port; every backend's tests subclass the port's suite."""
