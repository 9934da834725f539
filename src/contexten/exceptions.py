"""The exceptions Contexten raises, all under one root.

Callers can catch :class:`ContextenError` to handle anything Contexten raises on purpose;
adapters translate driver errors at their edge (``raise StoreUnavailable(...) from e``) so
no ``sqlite3`` or ``asyncpg`` exception leaks through a port.

The tree::

    ContextenError
    ├── ConfigurationError          bad URL, unknown scheme, missing extra, bad option
    ├── EventError
    │   ├── InvalidEvent            an envelope or payload that breaks the rules
    │   └── InvalidPattern          a type pattern that does not parse
    ├── StoreError
    │   ├── StoreUnavailable        the store cannot be reached or written (disk full, locked)
    │   ├── StoreCorrupted          the file is not a Contexten store, or is damaged
    │   ├── SchemaVersionError      written by a newer (or unknown) schema version
    │   ├── WrongExpectedVersion    optimistic concurrency: the stream is not where the caller
    │   │                           said it was; nothing of the batch was written
    │   └── StoreClosed             used after close()
    ├── DispatchError
    │   └── HandlerTimeout          a handler ran past its timeout
    ├── NonRetryableError           raised by user code: fail now, do not retry
    └── DeadLetterError
        └── DeadLetterNotFound
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ContextenError",
    "DeadLetterError",
    "DeadLetterNotFound",
    "DispatchError",
    "EventError",
    "HandlerTimeout",
    "InvalidEvent",
    "InvalidPattern",
    "NonRetryableError",
    "SchemaVersionError",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreUnavailable",
    "WrongExpectedVersion",
]


class ContextenError(Exception):
    """Root of every exception Contexten raises on purpose."""


class ConfigurationError(ContextenError):
    """The configuration cannot work: an unknown URL scheme, a missing extra, a bad option."""


class EventError(ContextenError):
    """Something is wrong with an event or a pattern."""


class InvalidEvent(EventError):
    """An event envelope or its JSON form breaks the rules (missing type, bad field...)."""


class InvalidPattern(EventError):
    """A type pattern does not parse (empty segment, ``**`` not at the end, bad characters)."""


class StoreError(ContextenError):
    """Base of every event-store error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written: the caller must treat the write as not done."""


class StoreCorrupted(StoreError):
    """The store's file exists but is not a Contexten store, or is damaged."""


class SchemaVersionError(StoreError):
    """The store was written by a schema version this code cannot read or migrate."""


class StoreClosed(StoreError):
    """The store was used after it was closed."""


class WrongExpectedVersion(StoreError):
    """An append's expected version did not hold; nothing of the batch was written.

    Attributes:
        stream: the stream whose expectation failed.
        expected: what the caller expected (a version or a :class:`StreamState`).
        actual: the stream's version when the append was tried (0: no stream).
    """

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, actual {actual}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DispatchError(ContextenError):
    """Base of errors raised by the dispatcher about handler execution."""


class HandlerTimeout(DispatchError):
    """A handler ran longer than its subscription's timeout and was cancelled."""


class NonRetryableError(ContextenError):
    """Raise (or subclass) this from a handler or step to fail at once, without retries.

    Any exception with a truthy ``non_retryable`` attribute is treated the same way, so
    platform errors can opt out of retries without inheriting from this class.
    """

    non_retryable = True


class DeadLetterError(ContextenError):
    """Base of dead-letter queue errors."""


class DeadLetterNotFound(DeadLetterError):
    """No dead letter has that id."""
