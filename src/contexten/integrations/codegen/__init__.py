"""Codegen: the agent API client, its actions, and agent-run events."""

from contexten.integrations.codegen.actions import (
    STATUS_EVENT_ACTIONS,
    AgentRunPoller,
    agent_run_event,
    cancel_agent_run,
    create_agent_run,
    get_agent_run,
)
from contexten.integrations.codegen.client import TERMINAL_STATUSES, CodegenAdapter, CodegenClient

__all__ = [
    "STATUS_EVENT_ACTIONS",
    "TERMINAL_STATUSES",
    "AgentRunPoller",
    "CodegenAdapter",
    "CodegenClient",
    "agent_run_event",
    "cancel_agent_run",
    "create_agent_run",
    "get_agent_run",
]
