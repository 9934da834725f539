"""Durable workflows: function workflows with sagas, state machines, and their engine.

A workflow is an ``async def fn(wf, input)`` whose every durable call (``wf.step``,
``wf.sleep``, ``wf.wait_for``...) is recorded in the instance's own stream in the event
store; after a crash the engine replays each unfinished instance from that stream and carries
on, so a completed step never runs again. See :mod:`contexten.workflows.context` for the
rules workflow code follows, and :class:`WorkflowEngine` for running it.
"""

from contexten.workflows.admin import (
    WorkflowInfo,
    get_workflow_info,
    list_workflows,
    request_cancel,
    request_redrive,
)
from contexten.workflows.context import Workflow, WorkflowContext
from contexten.workflows.definition import IdReusePolicy
from contexten.workflows.engine import WorkflowDefinition, WorkflowEngine, WorkflowHandle
from contexten.workflows.history import (
    TERMINAL_STATUSES,
    HistoryEntry,
    WorkflowState,
    WorkflowStatus,
    fold,
    stream_name,
)
from contexten.workflows.migration import MigrationPlan, SupersededCall
from contexten.workflows.state_machine import StateMachine, Transition
from contexten.workflows.steps import StepInfo, current_step

__all__ = [
    "TERMINAL_STATUSES",
    "HistoryEntry",
    "IdReusePolicy",
    "MigrationPlan",
    "StateMachine",
    "StepInfo",
    "SupersededCall",
    "Transition",
    "Workflow",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowEngine",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowState",
    "WorkflowStatus",
    "current_step",
    "fold",
    "get_workflow_info",
    "list_workflows",
    "request_cancel",
    "request_redrive",
    "stream_name",
]
