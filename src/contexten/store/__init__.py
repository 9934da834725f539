"""The event store: the port, and opening a backend from a URL.

``open_store("sqlite:///path/contexten.db")``, ``open_store("memory://")``; more schemes
(``postgresql://``) are registered by their backend modules. Core code only sees
:class:`EventStore`.
"""

from __future__ import annotations

import importlib
import os
from typing import Final

from contexten.exceptions import ConfigurationError
from contexten.observability.redaction import redact_url
from contexten.store.base import (
    Append,
    AppendResult,
    EventStore,
    ExpectedVersion,
    RecordedEvent,
    StreamInfo,
    StreamState,
)

__all__ = [
    "DEFAULT_STORE_URL",
    "Append",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "RecordedEvent",
    "StreamInfo",
    "StreamState",
    "create_store",
    "store_url_from_env",
]

DEFAULT_STORE_URL: Final = "sqlite:///contexten.db"

# scheme -> (module, class, the extra that installs its driver)
_BACKENDS: Final[dict[str, tuple[str, str, str | None]]] = {
    "memory": ("contexten.store.memory", "MemoryEventStore", None),
    "sqlite": ("contexten.store.sqlite", "SqliteEventStore", None),
    "postgres": ("contexten.store.postgres", "PostgresEventStore", "postgres"),
    "postgresql": ("contexten.store.postgres", "PostgresEventStore", "postgres"),
}


def store_url_from_env() -> str:
    """The store URL from ``CONTEXTEN_STORE_URL``, else the embedded SQLite default."""
    return os.environ.get("CONTEXTEN_STORE_URL") or DEFAULT_STORE_URL


def create_store(url: str | None = None) -> EventStore:
    """Create (not yet open) the event store named by ``url``.

    Raises:
        ConfigurationError: the scheme is unknown, or its optional driver is not installed.
    """
    url = url or store_url_from_env()
    scheme, sep, _ = url.partition("://")
    if not sep:
        scheme = url.partition(":")[0]
    try:
        module_name, class_name, extra = _BACKENDS[scheme.lower()]
    except KeyError:
        known = ", ".join(sorted(f"{s}://" for s in _BACKENDS))
        raise ConfigurationError(
            f"unknown event store URL scheme {scheme!r} in {redact_url(url)!r}; known: {known}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f" (pip install 'contexten[{extra}]')" if extra else ""
        raise ConfigurationError(f"the {scheme} event store is not available{hint}: {e}") from e
    store: EventStore = getattr(module, class_name)(url)
    return store
