"""The cache: the port, its levels, and opening one from a URL.

``create_cache("memory://")`` is an in-process LRU with time-to-live;
``create_cache("redis://127.0.0.1:6379/0")`` is Redis (the ``redis`` extra), and
``create_cache("redis://127.0.0.1:6379/0?l1=10000")`` puts a 10,000-entry in-process L1 in
front of it (a :class:`MultiLevelCache`). Query options:

* ``memory://``: ``max_entries`` (default 10000), ``ttl`` (default seconds per entry);
* ``redis://`` / ``rediss://``: ``namespace`` (key prefix, default ``contexten``), ``ttl``,
  ``l1`` (entries of an in-process L1; absent or 0: none), ``l1_ttl`` (default 30); other
  options go to redis-py.

``StoreCache(store)`` is the store level (L3): a table with time-to-live in the SQLite file
or PostgreSQL schema of the event store, shared by every process opening it.

Core code only sees :class:`Cache` (and :class:`MultiLevelCache` for ``get_or_load``).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from contexten.cache.base import Cache, Ttl
from contexten.cache.memory import MemoryCache
from contexten.cache.multilevel import CacheStats, MultiLevelCache
from contexten.cache.store import CacheTable, StoreCache
from contexten.clock import Clock
from contexten.exceptions import ConfigurationError
from contexten.observability.redaction import redact_url

__all__ = [
    "Cache",
    "CacheStats",
    "CacheTable",
    "MemoryCache",
    "MultiLevelCache",
    "StoreCache",
    "Ttl",
    "create_cache",
]

_OURS: Final = frozenset({"namespace", "ttl", "l1", "l1_ttl", "max_entries"})


def _number(options: dict[str, str], name: str, url: str) -> float | None:
    text = options.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        shown = redact_url(url)
        raise ConfigurationError(f"cache URL {shown!r}: {name}={text!r} is not a number") from None


def create_cache(url: str, *, clock: Clock | None = None) -> Cache:
    """Create the cache named by ``url`` (see the module docstring for the options).

    Args:
        url: ``memory://...``, ``redis://...`` or ``rediss://...``.
        clock: where in-process levels read time (default: the wall clock).

    Raises:
        ConfigurationError: the scheme or an option is unknown or bad, or the ``redis``
            extra is not installed.
    """
    parts = urlsplit(url)
    shown = redact_url(url)  # for messages: a Redis URL may carry a password
    scheme = parts.scheme.lower()
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _OURS}
    try:
        ttl = _number(options, "ttl", url)
        if scheme == "memory":
            unknown = sorted({k for k, _ in query} - {"max_entries", "ttl"})
            if unknown:
                raise ConfigurationError(f"cache URL {shown!r}: unknown option(s) {unknown}")
            size = _number(options, "max_entries", url)
            return MemoryCache(
                int(size) if size is not None else 10_000, default_ttl=ttl, clock=clock
            )
        if scheme in ("redis", "rediss"):
            return _create_redis(url, parts, query, options, ttl, clock)
    except ValueError as e:
        raise ConfigurationError(f"cache URL {shown!r}: {e}") from e
    raise ConfigurationError(
        f"unknown cache URL scheme {parts.scheme!r} in {shown!r}; known: memory://, redis://, "
        "rediss://"
    )


def _create_redis(
    url: str,
    parts: SplitResult,
    query: list[tuple[str, str]],
    options: dict[str, str],
    ttl: float | None,
    clock: Clock | None,
) -> Cache:
    try:
        from contexten.cache.redis import RedisCache
    except ImportError as e:
        raise ConfigurationError(
            f"the Redis cache is not available (pip install 'contexten[redis]'): {e}"
        ) from e
    passed_on = urlencode([(k, v) for k, v in query if k not in _OURS])
    driver_url = urlunsplit(parts._replace(query=passed_on))
    l2 = RedisCache(driver_url, namespace=options.get("namespace") or "contexten", default_ttl=ttl)
    l1_size = _number(options, "l1", url)
    if not l1_size:
        return l2
    l1_ttl = _number(options, "l1_ttl", url)
    return MultiLevelCache(
        MemoryCache(int(l1_size), clock=clock),
        l2,
        l1_ttl=l1_ttl if l1_ttl is not None else 30.0,
        clock=clock,
    )
