"""Contexten: a durable, event-driven orchestrator for engineering-team automation."""

from contexten.events import Event
from contexten.exceptions import ContextenError

__all__ = ["ContextenError", "Event"]
