"""What the engine knows about a registered workflow, and the handle on an instance."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contexten.events.envelope import Event
from contexten.events.patterns import Pattern
from contexten.exceptions import WorkflowFailedError
from contexten.workflows._limits import Limiter
from contexten.workflows.admin import WorkflowInfo
from contexten.workflows.history import TERMINAL_STATUSES, WorkflowState, WorkflowStatus

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["IdReusePolicy", "WorkflowDefinition", "WorkflowFn", "WorkflowHandle", "version_key"]

WorkflowFn = Callable[[Any, Any], Awaitable[Any]]
"""A workflow function: ``async def fn(wf, input) -> result``."""


class IdReusePolicy(enum.StrEnum):
    """When a start (or a trigger event) whose instance id already exists starts a new run.

    An id like ``{name}:{key(event)}`` names a work item; its runs are numbered 1, 2, 3...
    in the id's one stream, each ``started`` event linking to the run before. A trigger that
    finds the id's run still open (running, waiting, blocked...) is *absorbed*: recorded in
    that run's history as ``trigger_absorbed``, logged and counted, never silently dropped.
    Redeliveries of an event that already started (or was absorbed by) a run start nothing.
    """

    ALLOW_IF_CLOSED = "allow_if_closed"
    """A new run once the previous one ended, however it ended (the default for
    event-triggered workflows: the next release, the next time the label is added...)."""
    ALLOW_IF_FAILED = "allow_if_failed"
    """A new run only when the previous one failed, was compensated or was cancelled."""
    NEVER = "never"
    """One run per id, ever: a later start returns the existing run (the default for
    explicit :meth:`~contexten.workflows.WorkflowEngine.start_workflow` calls)."""

    def allows(self, previous: WorkflowState) -> bool:
        """Whether a new run may follow ``previous`` (the id's latest run)."""
        if previous.status not in TERMINAL_STATUSES or self is IdReusePolicy.NEVER:
            return False
        return self is IdReusePolicy.ALLOW_IF_CLOSED or previous.status in (
            WorkflowStatus.FAILED,
            WorkflowStatus.COMPENSATED,
            WorkflowStatus.CANCELLED,
        )


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key of version names: numbers numerically (``2`` < ``10``), before other names."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


@dataclass(eq=False)
class WorkflowDefinition:
    """A registered function workflow (one version of it): the function, its trigger, its
    limits and its id-reuse policy."""

    name: str
    fn: WorkflowFn
    version: str = "1"
    on: Pattern | None = None
    where: Callable[[Event], bool] | None = None
    key: Callable[[Event], Any] | None = None
    limiter: Limiter = field(default_factory=Limiter)
    concurrency_key: Callable[[Any], Any] | None = None
    id_reuse: IdReusePolicy | None = None

    def reuse_policy(self, triggered: bool) -> IdReusePolicy:
        """The id-reuse policy of a start: the registered one, else ``ALLOW_IF_CLOSED`` for
        a trigger event and ``NEVER`` for an explicit start."""
        if self.id_reuse is not None:
            return self.id_reuse
        return IdReusePolicy.ALLOW_IF_CLOSED if triggered else IdReusePolicy.NEVER

    def triggered_by(self, event: Event) -> bool:
        """Whether ``event`` starts an instance of this workflow."""
        if self.on is None or not self.on.matches(event.type):
            return False
        return self.where is None or bool(self.where(event))

    def instance_id(self, event: Event) -> str:
        """The instance id for a trigger event: ``"{name}:{key}"`` (key defaults to the id)."""
        value = self.key(event) if self.key is not None else None
        return f"{self.name}:{value if value is not None else event.id}"

    def slot_key(self, state: WorkflowState) -> str | None:
        """The concurrency key of an instance (None when there is no per-key limit)."""
        if self.limiter.max_per_key is None:
            return None
        source = self.concurrency_key
        value = source(state.input_value()) if source is not None else state.workflow_id
        return None if value is None else str(value)


class WorkflowHandle:
    """A reference to one workflow instance, returned by ``start_workflow``."""

    def __init__(self, engine: WorkflowEngine, workflow_id: str) -> None:
        self.engine = engine
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    async def info(self) -> WorkflowInfo:
        """The instance's current snapshot (see :meth:`WorkflowEngine.get_workflow`)."""
        return await self.engine.get_workflow(self.workflow_id)

    async def cancel(self) -> bool:
        """Ask for cancellation (see :meth:`WorkflowEngine.cancel_workflow`)."""
        return await self.engine.cancel_workflow(self.workflow_id)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the instance to end and return its result.

        An instance that does not exist yet is waited for too (an event-triggered workflow
        whose id is known before its event is processed).

        Args:
            timeout: real seconds to wait at most (None: no limit).

        Raises:
            WorkflowFailedError: it ended failed, compensated or cancelled, or it is
                ``blocked`` (status ``"blocked"``: it may still finish after an operator
                redrives or migrates it).
            TimeoutError: ``timeout`` passed first.
        """
        async with asyncio.timeout(timeout):
            state = await self.engine._wait_terminal(self.workflow_id)
        if state.status is WorkflowStatus.COMPLETED:
            return state.result
        raise WorkflowFailedError(self.workflow_id, str(state.status), state.error)
