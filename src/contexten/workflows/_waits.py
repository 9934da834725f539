"""Matching ``wf.wait_for`` calls against the global log, without missing early events.

The engine tails the global log and hands every ordinary (non-``$``) event to
:meth:`WaitIndex.observe`, which resolves the waiters it matches. A wait must also see events
that arrived *before* it was registered (after the workflow started): :meth:`WaitIndex.find`
first looks at what already happened, then registers the waiter, with no ``await`` between
the look and the registration, so every event is seen exactly once by one of the two.

What already happened is looked up in a bounded in-memory buffer of recent events, indexed
by type and correlation id, so 10,000 waits registered at once do not each scan the log; only
a wait reaching further back than the buffer scans the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from contexten.events.envelope import Event
from contexten.events.patterns import Pattern
from contexten.store.base import EventStore, RecordedEvent, is_system_stream

__all__ = ["WaitIndex", "Waiter"]

_log = logging.getLogger(__name__)

_PAGE: Final = 1000


@dataclass(eq=False, slots=True)
class Waiter:
    """One parked ``wait_for``: what it accepts, and the future that receives the event."""

    pattern: Pattern
    match: Callable[[Event], bool] | None
    correlation_id: str | None
    after: int
    consumed: set[str]
    future: asyncio.Future[RecordedEvent | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def accepts(self, rec: RecordedEvent) -> bool:
        """Whether ``rec`` satisfies this wait."""
        event = rec.event
        if rec.position <= self.after or event.id in self.consumed:
            return False
        if self.correlation_id is not None and event.correlation_id != self.correlation_id:
            return False
        if not self.pattern.matches(event.type):
            return False
        if self.match is None:
            return True
        try:
            return bool(self.match(event))
        except Exception:
            _log.exception("wait_for match predicate raised on event %s; not a match", event.id)
            return False


_Buckets = dict[str | None, list[Waiter]]


class WaitIndex:
    """Parked waits by pattern and correlation id, plus the buffer of recent events.

    The buffer covers the log positions ``(floor, tail]``; the engine's tail moves ``tail``
    forward through :meth:`observe` and :meth:`advance`.
    """

    def __init__(self, store: EventStore, buffer_size: int = 10_000) -> None:
        self._store = store
        self._size = buffer_size
        self._exact: dict[str, _Buckets] = {}
        self._wild: dict[str, tuple[Pattern, _Buckets]] = {}
        self._recent: deque[RecordedEvent] = deque()
        self._by_type: dict[str, deque[RecordedEvent]] = {}
        self._by_cid: dict[str, deque[RecordedEvent]] = {}
        self.floor = 0
        self.tail = 0
        self.waiting = 0

    def reset(self, position: int) -> None:
        """Start the buffer empty at ``position`` (nothing before it is buffered)."""
        self._recent.clear()
        self._by_type.clear()
        self._by_cid.clear()
        self.floor = self.tail = position

    # -- the tail's side --------------------------------------------------------------------

    def advance(self, position: int) -> None:
        """The tail has passed ``position`` (an event no wait can match, e.g. a ``$`` stream)."""
        if position > self.tail:
            self.tail = position

    def observe(self, rec: RecordedEvent) -> None:
        """Buffer an ordinary event and resolve every parked wait it matches (once: an
        event at or before the tail, seen already, is ignored)."""
        if rec.position <= self.tail:
            return
        self._buffer(rec)
        self.tail = rec.position
        if self.waiting:
            self._dispatch(rec)

    def _buffer(self, rec: RecordedEvent) -> None:
        if self._size <= 0:
            self.floor = rec.position
            return
        self._recent.append(rec)
        self._by_type.setdefault(rec.event.type, deque()).append(rec)
        cid = rec.event.correlation_id
        if cid is not None:
            self._by_cid.setdefault(cid, deque()).append(rec)
        while len(self._recent) > self._size:
            old = self._recent.popleft()
            self.floor = old.position
            _popleft(self._by_type, old.event.type)
            if old.event.correlation_id is not None:
                _popleft(self._by_cid, old.event.correlation_id)

    def _dispatch(self, rec: RecordedEvent) -> None:
        event = rec.event
        buckets = self._exact.get(event.type)
        if buckets is not None:
            self._resolve(buckets, rec)
        for pattern, wild in list(self._wild.values()):
            if pattern.matches(event.type):
                self._resolve(wild, rec)

    def _resolve(self, buckets: _Buckets, rec: RecordedEvent) -> None:
        for cid in (rec.event.correlation_id, None) if rec.event.correlation_id else (None,):
            waiters = buckets.get(cid)
            if not waiters:
                continue
            for waiter in list(waiters):
                if not waiter.future.done() and waiter.accepts(rec):
                    waiter.future.set_result(rec)
                    self.remove(waiter)

    # -- the waiting workflow's side ----------------------------------------------------------

    async def find(self, waiter: Waiter) -> RecordedEvent | None:
        """An event that already satisfies ``waiter``, else None after registering it.

        When None comes back, the waiter is parked: its future gets the event when one comes.
        """
        start = waiter.after
        while start < self.floor:  # the wait reaches back past the buffer: scan the store
            end = self.floor
            found = await self._scan_store(waiter, start, end)
            if found is not None:
                return found
            start = end
        found = self._scan_buffer(waiter)
        if found is not None:
            return found
        self._add(waiter)
        return None

    async def _scan_store(self, waiter: Waiter, start: int, end: int) -> RecordedEvent | None:
        position = start
        while position < end:
            page = await self._store.read_all(after=position, limit=min(_PAGE, end - position))
            if not page:
                return None
            for rec in page:
                if rec.position > end:
                    return None
                if not is_system_stream(rec.stream) and waiter.accepts(rec):
                    return rec
            position = page[-1].position
        return None

    def _scan_buffer(self, waiter: Waiter) -> RecordedEvent | None:
        if waiter.correlation_id is not None:
            candidates = self._by_cid.get(waiter.correlation_id, ())
        elif waiter.pattern.is_exact:
            candidates = self._by_type.get(waiter.pattern.text, ())
        else:
            candidates = self._recent
        for rec in candidates:
            if rec.position > waiter.after and waiter.accepts(rec):
                return rec
        return None

    def _add(self, waiter: Waiter) -> None:
        text = waiter.pattern.text
        if waiter.pattern.is_exact:
            buckets = self._exact.setdefault(text, {})
        else:
            buckets = self._wild.setdefault(text, (waiter.pattern, {}))[1]
        buckets.setdefault(waiter.correlation_id, []).append(waiter)
        self.waiting += 1

    def remove(self, waiter: Waiter) -> None:
        """Unpark ``waiter`` (matched, timed out or cancelled); harmless if not parked."""
        text = waiter.pattern.text
        if waiter.pattern.is_exact:
            buckets = self._exact.get(text)
        else:
            entry = self._wild.get(text)
            buckets = entry[1] if entry else None
        if buckets is None:
            return
        waiters = buckets.get(waiter.correlation_id)
        if not waiters or waiter not in waiters:
            return
        waiters.remove(waiter)
        self.waiting -= 1
        if not waiters:
            del buckets[waiter.correlation_id]
            if not buckets:
                if waiter.pattern.is_exact:
                    del self._exact[text]
                else:
                    del self._wild[text]


def _popleft(index: dict[str, deque[RecordedEvent]], key: str) -> None:
    entries = index.get(key)
    if entries:
        entries.popleft()
        if not entries:
            del index[key]
