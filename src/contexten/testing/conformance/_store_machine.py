"""The stateful part of the event-store conformance suite: random command sequences.

A Hypothesis state machine commits (with every kind of expectation, several streams per
commit, dedup keys), reads, and reopens the store, checking each answer against
:class:`StoreModel`, a plain-Python model of what the store must hold.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contexten.events.envelope import Event
from contexten.exceptions import WrongExpectedVersion
from contexten.store.base import (
    Append,
    AppendResult,
    EventStore,
    ExpectedVersion,
    StreamInfo,
    StreamState,
)

__all__ = ["StoreModel", "store_machine"]

_T = TypeVar("_T")


def _event() -> Event:
    return Event(type="conformance.happened", source="conformance")


_STREAMS = ("a", "b", "c")
_KEYS = ("k1", "k2")
_EXPECTATIONS = ("exact", "stale", "any", "no_stream", "exists")


class StoreModel:
    """What the store must hold: each stream's event ids, the log, the dedup results."""

    def __init__(self) -> None:
        self.streams: dict[str, list[str]] = {}
        self.log: list[tuple[str, str, int]] = []  # (stream, event id, version)
        self.dedup: dict[str, list[AppendResult]] = {}

    def version(self, stream: str) -> int:
        return len(self.streams.get(stream, ()))

    def expectation(self, kind: str, actual: int) -> ExpectedVersion:
        if kind == "exact":
            return actual
        if kind == "stale":
            return actual + 1
        return {
            "any": StreamState.ANY,
            "no_stream": StreamState.NO_STREAM,
            "exists": StreamState.STREAM_EXISTS,
        }[kind]

    def holds(self, expected: ExpectedVersion, actual: int) -> bool:
        if expected is StreamState.ANY:
            return True
        if expected is StreamState.NO_STREAM:
            return actual == 0
        if expected is StreamState.STREAM_EXISTS:
            return actual > 0
        return expected == actual

    def apply(self, appends: list[Append]) -> list[AppendResult]:
        results = []
        for a in appends:
            ids = self.streams.setdefault(a.stream, [])
            first = len(self.log) + 1
            for e in a.events:
                ids.append(e.id)
                self.log.append((a.stream, e.id, len(ids)))
            if a.events:
                results.append(AppendResult(a.stream, len(ids), first, len(self.log)))
            else:
                results.append(AppendResult(a.stream, len(ids), 0, 0))
        self.streams = {s: ids for s, ids in self.streams.items() if ids}
        return results


def store_machine(
    make_store: Callable[[Path], EventStore], tmp_path: Path, *, supports_reopen: bool
) -> type[RuleBasedStateMachine]:
    """A state-machine class testing stores from ``make_store``, one directory per run."""
    counter = itertools.count()

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.directory = Path(tempfile.mkdtemp(prefix=f"m{next(counter)}-", dir=tmp_path))
            self.store = make_store(self.directory)
            self.run(self.store.open())
            self.model = StoreModel()

        def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
            return self.loop.run_until_complete(coro)

        @rule(
            plan=st.lists(
                st.tuples(
                    st.sampled_from(_STREAMS),
                    st.integers(0, 3),
                    st.sampled_from(_EXPECTATIONS),
                ),
                min_size=1,
                max_size=3,
            ),
            key=st.none() | st.sampled_from(_KEYS),
        )
        def commit(self, plan: list[tuple[str, int, str]], key: str | None) -> None:
            pending: dict[str, int] = {}
            appends, ok = [], True
            for stream, count, kind in plan:
                actual = pending.get(stream, self.model.version(stream))
                expected = self.model.expectation(kind, actual)
                ok = ok and self.model.holds(expected, actual)
                pending[stream] = actual + count
                appends.append(Append(stream, [_event() for _ in range(count)], expected))
            if key is not None and key in self.model.dedup:
                want = [
                    AppendResult(r.stream, r.version, r.first_position, r.last_position, True)
                    for r in self.model.dedup[key]
                ]
                assert self.run(self.store.commit(appends, dedup_key=key)) == want
            elif not ok:
                with pytest.raises(WrongExpectedVersion):
                    self.run(self.store.commit(appends, dedup_key=key))
            else:
                want = self.model.apply(appends)
                if key is not None:
                    self.model.dedup[key] = want
                assert self.run(self.store.commit(appends, dedup_key=key)) == want

        @rule(
            stream=st.sampled_from(_STREAMS),
            from_version=st.integers(0, 8),
            limit=st.none() | st.integers(0, 5),
        )
        def read_stream(self, stream: str, from_version: int, limit: int | None) -> None:
            got = self.run(self.store.read_stream(stream, from_version=from_version, limit=limit))
            ids = self.model.streams.get(stream, [])[max(from_version, 1) - 1 :]
            want = ids if limit is None else ids[:limit]
            assert [r.event.id for r in got] == want
            assert all(r.stream == stream for r in got)

        @rule(after=st.integers(0, 40), limit=st.integers(0, 10))
        def read_all(self, after: int, limit: int) -> None:
            got = self.run(self.store.read_all(after=after, limit=limit))
            want = self.model.log[after : after + limit]
            assert [(r.stream, r.event.id, r.version) for r in got] == want
            assert [r.position for r in got] == list(range(after + 1, after + 1 + len(want)))

        @rule(before=st.none() | st.integers(0, 40), limit=st.integers(0, 10))
        def read_all_backwards(self, before: int | None, limit: int) -> None:
            got = self.run(self.store.read_all_backwards(before=before, limit=limit))
            end = (
                len(self.model.log)
                if before is None
                else max(min(before - 1, len(self.model.log)), 0)
            )
            want = list(reversed(self.model.log[max(end - limit, 0) : end]))
            assert [(r.stream, r.event.id, r.version) for r in got] == want

        @precondition(lambda self: supports_reopen)
        @rule()
        def reopen(self) -> None:
            self.run(self.store.close())
            self.store = make_store(self.directory)
            self.run(self.store.open())

        @invariant()
        def heads_and_streams_match(self) -> None:
            assert self.run(self.store.head()) == len(self.model.log)
            streams = self.run(self.store.list_streams())
            assert streams == [
                StreamInfo(s, len(ids)) for s, ids in sorted(self.model.streams.items())
            ]

        def teardown(self) -> None:
            try:
                self.run(self.store.close())
            finally:
                self.loop.close()

    return StoreMachine
