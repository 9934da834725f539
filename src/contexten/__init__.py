"""Contexten: a durable, event-driven orchestrator for engineering-team automation."""

from contexten.app import App
from contexten.bus import HandlerContext, Subscription
from contexten.events import Event
from contexten.exceptions import ContextenError, NonRetryableError
from contexten.resilience.retry import RetryPolicy
from contexten.workflows import StateMachine, Transition, Workflow, WorkflowHandle

__all__ = [
    "App",
    "ContextenError",
    "Event",
    "HandlerContext",
    "NonRetryableError",
    "RetryPolicy",
    "StateMachine",
    "Subscription",
    "Transition",
    "Workflow",
    "WorkflowHandle",
]
