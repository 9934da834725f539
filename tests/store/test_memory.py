"""The in-memory store against the event-store conformance suite."""

from __future__ import annotations

from pathlib import Path

from contexten.store import EventStore, create_store
from contexten.store.memory import MemoryEventStore
from contexten.testing.conformance.store import EventStoreConformance


class TestMemoryEventStore(EventStoreConformance):
    supports_reopen = False
    stateful_examples = 50

    def make_store(self, directory: Path) -> EventStore:
        return MemoryEventStore()


def test_memory_url_opens_the_memory_store() -> None:
    assert isinstance(create_store("memory://"), MemoryEventStore)
