"""Which stream a published event goes to when the caller does not say.

Streams group events for reading back (``read_stream``) and for optimistic concurrency; the
dispatcher does not care about them (it tails the global log). The default groups an event
with the others about the same thing from the same source: ``{source}-{subject}``, or
``{source}-{type}`` when the event has no subject. Characters outside a conservative set are
replaced with ``_`` and the name is capped in length, so every backend accepts it, and it
never starts with ``$`` (reserved for system streams).
"""

from __future__ import annotations

import re
from typing import Final

from contexten.events.envelope import Event

__all__ = ["MAX_STREAM_NAME", "default_stream", "safe_stream_name"]

MAX_STREAM_NAME: Final = 200
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.:@/#+=\-]")


def safe_stream_name(name: str) -> str:
    """``name`` with unsafe characters replaced, cut to :data:`MAX_STREAM_NAME` characters."""
    cleaned = _UNSAFE.sub("_", name)[:MAX_STREAM_NAME]
    return cleaned or "_"


_CACHE_LIMIT: Final = 4096
_cache: dict[tuple[str, str], str] = {}


def default_stream(event: Event) -> str:
    """The stream ``event`` is stored in unless the publisher names one.

    ``github-octo/repo#12`` for an event from ``github`` about subject ``octo/repo#12``;
    ``contexten-contexten.tick`` for a subject-less ``contexten.tick``.
    """
    key = (event.source, event.subject or event.type)
    name = _cache.get(key)
    if name is None:
        name = safe_stream_name(f"{key[0]}-{key[1]}")
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = name
    return name
