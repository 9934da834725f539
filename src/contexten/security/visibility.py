"""Which system streams a principal may read: the one table the API and the dashboard use.

Most of the log is readable with ``events:read``; two kinds of system streams are not:

* the audit trail (``$audit-*``) needs ``audit:read``;
* the token records (``$security-*``, hashes only) need ``tokens:manage``.
"""

from __future__ import annotations

from typing import Final

from contexten.security.audit import AUDIT_STREAM_PREFIX
from contexten.security.roles import Principal, allowed

__all__ = ["RESTRICTED_STREAMS", "SECURITY_STREAM_PREFIX", "hidden_streams"]

SECURITY_STREAM_PREFIX: Final = "$security-"
"""The prefix of the token records' streams."""

RESTRICTED_STREAMS: Final = (
    (AUDIT_STREAM_PREFIX, "audit:read"),
    (SECURITY_STREAM_PREFIX, "tokens:manage"),
)
"""System stream prefixes, each shown only to principals allowed the paired action."""


def hidden_streams(principal: Principal | None) -> tuple[str, ...]:
    """The prefixes of the streams ``principal`` may not see (empty: it may see them all)."""
    return tuple(prefix for prefix, action in RESTRICTED_STREAMS if not allowed(principal, action))
