"""HMAC-SHA256 signing and constant-time checking, shared by the webhook verifiers.

Every platform Contexten receives webhooks from signs them the same way underneath: a hex
HMAC-SHA256 of some bytes under a shared secret. What differs (the header, a prefix, what is
signed) lives in each platform's ``webhooks`` module; this module only computes and compares.

Comparisons are constant-time (:func:`hmac.compare_digest`) and never raise on hostile input:
a header value that is not ASCII hex simply does not match.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

__all__ = ["as_secret", "hmac_sha256_hex", "matches_any"]

_GIL_RELEASED_FROM: Final = 2048  # CPython's hashlib releases the GIL from this size on
_CHUNK: Final = _GIL_RELEASED_FROM - 1
_CHUNKED_UP_TO: Final = 64 * 1024


def as_secret(secret: str | bytes) -> bytes:
    """``secret`` as bytes (a ``str`` is UTF-8 encoded)."""
    return secret if isinstance(secret, bytes) else secret.encode("utf-8")


def hmac_sha256_hex(secret: str | bytes, *parts: bytes) -> str:
    """The lower-case hex HMAC-SHA256 of the concatenation of ``parts`` under ``secret``.

    A part of a typical webhook's size (2 KiB to 64 KiB) is fed in pieces under 2 KiB:
    hashlib releases the GIL for every update of 2 KiB or more, and in a server whose store
    writer thread also wants the GIL, taking it back cost the event loop ~25 us per request
    (B3: ~15% of the requests/s). Past 64 KiB the hashing itself is long enough that letting
    other threads run meanwhile is worth the hand-off.
    """
    mac = hmac.new(as_secret(secret), digestmod=hashlib.sha256)
    for part in parts:
        size = len(part)
        if size < _GIL_RELEASED_FROM or size > _CHUNKED_UP_TO:
            mac.update(part)
            continue
        view = memoryview(part)
        for start in range(0, size, _CHUNK):
            mac.update(view[start : start + _CHUNK])
    return mac.hexdigest()


def matches_any(secrets: Sequence[bytes], provided_hex: str, *parts: bytes) -> bool:
    """Whether ``provided_hex`` is the HMAC of ``parts`` under one of ``secrets``.

    Every secret is tried (two during a rotation), each comparison in constant time. With no
    secret at all, nothing matches: an unconfigured platform accepts nothing.
    """
    provided = provided_hex.strip().lower().encode("utf-8", "replace")
    found = False
    for secret in secrets:
        expected = hmac_sha256_hex(secret, *parts).encode("ascii")
        found |= hmac.compare_digest(expected, provided)
    return found
