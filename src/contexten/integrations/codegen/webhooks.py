"""Agent-run update deliveries (as the sandbox sends them): verify, then turn into events.

Headers: ``X-Codegen-Event``, ``X-Codegen-Delivery`` and
``X-Codegen-Signature: sha256=<hex HMAC-SHA256(secret, body)>``; the body is
``{"event": "agent_run.status_changed", "agent_run": {...}}``. The secret comes from
``CONTEXTEN_CODEGEN_WEBHOOK_SECRET`` (two comma-separated secrets during a rotation).
The event is the same one :class:`~contexten.integrations.codegen.AgentRunPoller` makes, with
the same delivery id, so a run seen both ways is stored once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from contexten.events import Event
from contexten.exceptions import InvalidEvent
from contexten.integrations.codegen.actions import agent_run_event
from contexten.integrations.signing import as_secret, matches_any

__all__ = ["SIGNATURE_HEADER", "normalize", "verify_signature"]

SIGNATURE_HEADER = "X-Codegen-Signature"
_PREFIX = "sha256="


def verify_signature(secrets: Iterable[str], body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is ``sha256=<HMAC>`` of ``body`` under one of ``secrets``."""
    if not signature or not signature.startswith(_PREFIX):
        return False
    keys = [as_secret(secret) for secret in secrets if secret]
    return matches_any(keys, signature[len(_PREFIX) :], body)


def normalize(payload: Mapping[str, Any]) -> Event:
    """The ``codegen.agent_run.*`` event for a delivery's payload."""
    run = payload.get("agent_run")
    if not isinstance(run, Mapping) or run.get("id") is None:
        raise InvalidEvent("a Codegen delivery needs an agent_run with an id")
    return agent_run_event(dict(run))
