"""Audit events: who did what, when, from where, to what, and how it ended.

Every authentication failure, every refusal for lack of role, and every operator or admin
action (over HTTP or from the command line) is recorded as a ``contexten.audit.*`` event in
the store, in a system stream per UTC day (``$audit-2030-01-31``): never delivered to
handlers, kept like every other event, readable with ``contexten events list --system``.

An audit event names the principal by its token's public id and name, never the token;
the client by its address. Types:

=======================================  ===============================================
``contexten.audit.auth.failed``          no credential, or one that is not an active token
``contexten.audit.auth.denied``          a valid token whose role does not allow the action
``contexten.audit.auth.throttled``       a client passed the failure limit (once a window)
``contexten.audit.<action>``             an operator/admin action, e.g. ``contexten.audit.
                                         dlq.redrive``, ``contexten.audit.tokens.manage``
=======================================  ===============================================
"""

from __future__ import annotations

import getpass
import socket
from datetime import datetime
from typing import Any, Final

from contexten.clock import Clock, WallClock
from contexten.events.envelope import Event
from contexten.security.roles import Principal, Role
from contexten.store.base import EventStore

__all__ = [
    "AUDIT_STREAM_PREFIX",
    "AUTH_DENIED",
    "AUTH_FAILED",
    "AUTH_THROTTLED",
    "audit_stream",
    "audit_type",
    "cli_client",
    "cli_principal",
    "record_audit",
]

AUDIT_STREAM_PREFIX: Final = "$audit-"
AUTH_FAILED: Final = "contexten.audit.auth.failed"
AUTH_DENIED: Final = "contexten.audit.auth.denied"
AUTH_THROTTLED: Final = "contexten.audit.auth.throttled"
_MAX_TEXT: Final = 300


def audit_stream(when: datetime) -> str:
    """The stream that holds the audit events of ``when``'s UTC day."""
    return f"{AUDIT_STREAM_PREFIX}{when.date().isoformat()}"


def audit_type(action: str) -> str:
    """The event type recording ``action``: ``dlq:redrive`` → ``contexten.audit.dlq.redrive``."""
    return "contexten.audit." + action.replace(":", ".")


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"


def cli_principal() -> Principal:
    """Who a command-line action acts as: whoever can open the store (the OS user)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without passwd)
        user = "unknown"
    return Principal("cli", f"cli:{user}", Role.ADMIN)


def cli_client() -> str:
    """Where a command-line action comes from: this host."""
    return f"cli@{socket.gethostname()}"


async def record_audit(
    store: EventStore,
    event_type: str,
    *,
    principal: Principal | None,
    client: str | None,
    outcome: str,
    target: str | None = None,
    detail: str | None = None,
    request: tuple[str, str] | None = None,
    clock: Clock | None = None,
) -> Event:
    """Append one audit event and return it.

    Args:
        store: where to record it.
        event_type: :data:`AUTH_FAILED`, :data:`AUTH_DENIED`, :data:`AUTH_THROTTLED`, or
            :func:`audit_type` of an action.
        principal: who (None: not authenticated).
        client: from where (a client address, or :func:`cli_client`).
        outcome: how it ended: ``"done"``, ``"refused"``, ``"unchanged"``, an HTTP status...
        target: what it acted on (a dead letter id, a workflow id, a token id).
        detail: a short reason (cut to 300 characters); never a credential.
        request: the HTTP method and path, for requests.
        clock: where the time comes from.

    Raises:
        StoreUnavailable: the audit event could not be stored (callers report it).
    """
    now = (clock or WallClock()).now()
    data: dict[str, Any] = {
        "principal": principal.to_dict() if principal is not None else None,
        "client": _clip(client),
        "outcome": outcome,
    }
    if target is not None:
        data["target"] = _clip(target)
    if detail is not None:
        data["detail"] = _clip(detail)
    if request is not None:
        data["method"], data["path"] = request[0], _clip(request[1])
    event = Event(
        type=event_type,
        subject=_clip(target),
        time=now,
        actor=principal.name if principal is not None else None,
        data=data,
    )
    await store.append(audit_stream(now), [event])
    return event
