"""Opening a store that may not be up yet: retry with backoff for a bounded time.

A worker or web process started while its PostgreSQL is down (a host boot, a failover, a
restart of the database) would otherwise die at once and rely on its service manager to
try again. :func:`open_with_retry` retries :meth:`EventStore.open` while it raises
:class:`~contexten.exceptions.StoreUnavailable` (the server cannot be reached, or refused
the connection), logging each failure with the reason and the store's URL without its
credentials, and gives up after ``wait`` seconds with a ``StoreUnavailable`` that says how
long it tried and why. Only an unreachable server is waited for (a refused or timed-out
connection, a server starting up or shutting down, or out of connection slots); any other
error (a SQLite file in a missing directory, a refused login, a store that is not ours, a
schema newer than the code, a non-UTF8 database) is raised at once: waiting would not
change it.
"""

from __future__ import annotations

import time

from contexten.clock import Clock, WallClock
from contexten.exceptions import StoreUnavailable
from contexten.observability.logging import get_logger
from contexten.observability.redaction import redact_text, redact_url
from contexten.resilience.retry import RetryPolicy
from contexten.settings import seconds_from_env
from contexten.store.base import EventStore

__all__ = ["OPEN_WAIT_ENV", "open_wait_from_env", "open_with_retry"]

OPEN_WAIT_ENV = "CONTEXTEN_STORE_OPEN_WAIT"
"""Seconds a starting App keeps retrying an unreachable store (unset: the caller's default)."""

_BACKOFF = RetryPolicy(
    initial_interval=0.5, backoff_coefficient=2.0, maximum_interval=5.0, maximum_attempts=0
)
"""0.5 s, doubling, at most 5 s apart: a database back within seconds is found within one."""

_log = get_logger("contexten.store")

_TRANSIENT_DRIVER_ERRORS = frozenset(
    {"CannotConnectNowError", "TooManyConnectionsError", "ConnectionDoesNotExistError"}
)
"""asyncpg's errors for a server that is starting up, shutting down, or full (by name: the
driver is an optional dependency)."""


def _unreachable(error: StoreUnavailable) -> bool:
    """Whether ``error`` says the server could not be reached (worth waiting for)."""
    cause: BaseException | None = error.__cause__
    while cause is not None:
        if isinstance(cause, OSError) or type(cause).__name__ in _TRANSIENT_DRIVER_ERRORS:
            return True
        cause = cause.__cause__
    return False


def open_wait_from_env(default: float) -> float:
    """``CONTEXTEN_STORE_OPEN_WAIT`` in seconds if set, else ``default``.

    Raises:
        ConfigurationError: the variable is not a number >= 0.
    """
    return seconds_from_env(OPEN_WAIT_ENV, default)


async def open_with_retry(
    store: EventStore,
    wait: float,
    *,
    clock: Clock | None = None,
    backoff: RetryPolicy = _BACKOFF,
) -> None:
    """Open ``store``, retrying while it is unreachable for up to ``wait`` seconds (0: once).

    Raises:
        StoreUnavailable: still unreachable after ``wait`` seconds (the message says how
            long and the last reason).
        Exception: whatever else ``store.open()`` raised, at once.
    """
    clock = clock or WallClock()
    where = redact_url(store.url)
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        attempt += 1
        try:
            await store.open()
            if attempt > 1:
                _log.info("event store reachable", store=where, attempts=attempt)
            return
        except StoreUnavailable as e:
            left = deadline - time.monotonic()
            reason = redact_text(str(e))
            if wait <= 0 or not _unreachable(e):
                raise
            if left <= 0:
                raise StoreUnavailable(
                    f"the event store {where} stayed unreachable for {wait:g} s "
                    f"({attempt} attempts; last: {reason}); giving up"
                ) from e
            delay = min(backoff.delay(attempt), left)
            _log.warning(
                "event store unreachable; retrying",
                store=where,
                attempt=attempt,
                retry_in=round(delay, 2),
                gives_up_in=round(left, 1),
                error=reason,
            )
            await clock.sleep(delay)
