"""Time-ordered identifiers (UUIDv7, RFC 9562).

Event ids sort by creation time, so they index well and read naturally in logs. Python 3.11
has no ``uuid.uuid7``; this small generator follows RFC 9562 §6.2 method 1: a 12-bit counter
in ``rand_a`` keeps ids monotonic within one millisecond, in one process.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["new_id", "uuid7"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7, strictly greater than the previous one from this process."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2)) & 0x3FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def new_id() -> str:
    """Return a new time-ordered id in its canonical string form."""
    return str(uuid7())
