"""Time-ordered identifiers (UUIDv7, RFC 9562).

Event ids sort by creation time, so they index well and read naturally in logs. Python 3.11
has no ``uuid.uuid7``; this small generator follows RFC 9562 §6.2 method 1: a 12-bit counter
in ``rand_a`` keeps ids monotonic within one millisecond, in one process.

The random bits come from :mod:`random` (seeded from the OS, and reseeded in a forked child),
not from ``os.urandom``: ids must be unique, not secret, and a system call per id was a
measurable share of publishing cost.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

__all__ = ["new_id", "uuid7"]

_bits = random.getrandbits
_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _next_value() -> int:
    """The next UUIDv7 as a 128-bit integer, greater than every earlier one from here."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = _bits(10)  # start low in the 12 bits, leaving room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    return (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | _bits(62)


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7, strictly greater than the previous one from this process."""
    return uuid.UUID(int=_next_value())


def new_id() -> str:
    """Return a new time-ordered id (a UUIDv7) in its canonical string form."""
    h = f"{_next_value():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
