"""Conformance suites: one per port; every backend's tests subclass the port's suite.

A new backend is done when its subclass of the suite passes, not before.
"""

from contexten.testing.conformance.cache import CacheConformance
from contexten.testing.conformance.projections import ReadModelsConformance
from contexten.testing.conformance.store import EventStoreConformance

__all__ = ["CacheConformance", "EventStoreConformance", "ReadModelsConformance"]
