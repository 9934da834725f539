"""Idempotency helpers: make a retried create find what the first attempt made.

Platforms that honour an ``Idempotency-Key`` header get one. The others get a
check-before-create: the key travels with the object (a hidden marker in a GitHub comment or
PR body, Slack message metadata, a client-chosen id for Linear objects, Codegen run metadata),
and a create first looks for an object carrying its key. :class:`RecentResults` remembers the
last results in-process, so a retry in the same process does not even need the lookup.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import OrderedDict
from typing import Any

__all__ = [
    "MARKER_PREFIX",
    "RecentResults",
    "find_marker",
    "id_for_key",
    "platform_key",
    "with_marker",
]

MARKER_PREFIX = "contexten:idempotency-key="
_MARKER_RE = re.compile(r"<!-- contexten:idempotency-key=([^\s>]+) -->")
_NAMESPACE = uuid.UUID("6f1b7c1e-5d0b-4f8e-9a55-2c4f3e0c9a10")


_SAFE = re.compile(r"[^\s<>]{1,200}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/=+@#-]+")


def platform_key(key: str) -> str:
    """``key`` in the alphabet every platform takes: the one mapping of all idempotency keys.

    A key of up to 200 printable characters without spaces or ``<>`` is used as it is (so
    markers already written keep matching). Any other (``ctx.idempotency_key`` of a handler
    defined in a function holds ``<locals>``; a workflow step's name may hold spaces) becomes
    its readable part, unsafe runs replaced by ``_`` and cut to 100 characters, plus ``~``
    and 32 hex digits of its SHA-256: still one key per key, and still recognisable in a
    comment's marker. The mapping is idempotent (a mapped key maps to itself).

    Raises:
        ValueError: ``key`` is empty or not a string.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("an idempotency key must be a non-empty string")
    if _SAFE.fullmatch(key) and key.isprintable():
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    readable = _UNSAFE.sub("_", key)[:100].strip("_") or "key"
    return f"{readable}~{digest}"


def with_marker(body: str, key: str | None) -> str:
    """``body`` with the hidden marker for ``key`` appended (unchanged if ``key`` is None).

    The marker is an HTML comment, which GitHub's Markdown renderer does not show; it
    carries :func:`platform_key` of ``key``.
    """
    if key is None:
        return body
    marker = f"<!-- {MARKER_PREFIX}{platform_key(key)} -->"
    if marker in body:
        return body
    return f"{body}\n\n{marker}" if body else marker


def find_marker(body: str | None) -> str | None:
    """The idempotency key marked in ``body`` (as :func:`platform_key` made it), or ``None``."""
    if not body:
        return None
    match = _MARKER_RE.search(body)
    return match.group(1) if match else None


def id_for_key(key: str, scope: str = "") -> str:
    """A stable, version-4-shaped UUID for ``key``: the client-chosen id of the object it creates.

    The bits come from a name-based (v5) hash, so the same key always gives the same id, but
    the version and variant bits are those of a v4 UUID: Linear documents its client-chosen
    ids (``IssueCreateInput.id``, ``CommentCreateInput.id``) as "UUID v4 format". Any key
    is accepted (through :func:`platform_key`).
    """
    digest = uuid.uuid5(_NAMESPACE, f"{scope}\x00{platform_key(key)}").bytes
    return str(uuid.UUID(bytes=digest, version=4))


class RecentResults:
    """A bounded in-process memory of ``(scope, key) -> result`` for recent creates."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, scope: str, key: str | None) -> Any:
        """The remembered result, or ``None``."""
        if key is None:
            return None
        value = self._items.get((scope, key))
        if value is not None:
            self._items.move_to_end((scope, key))
        return value

    def put(self, scope: str, key: str | None, result: Any) -> None:
        """Remember ``result`` for ``key`` (no-op without a key)."""
        if key is None:
            return
        self._items[(scope, key)] = result
        self._items.move_to_end((scope, key))
        while len(self._items) > self._maxsize:
            self._items.popitem(last=False)

    def forget(self, scope: str, key: str | None) -> None:
        """Drop ``key`` (after its object was deleted by a compensation)."""
        if key is not None:
            self._items.pop((scope, key), None)
