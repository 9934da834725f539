"""What the engine knows about a registered workflow, and the handle on an instance."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contexten.events.envelope import Event
from contexten.events.patterns import Pattern
from contexten.exceptions import WorkflowFailedError
from contexten.workflows._limits import Limiter
from contexten.workflows.admin import WorkflowInfo
from contexten.workflows.history import WorkflowState, WorkflowStatus

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["WorkflowDefinition", "WorkflowFn", "WorkflowHandle"]

WorkflowFn = Callable[[Any, Any], Awaitable[Any]]
"""A workflow function: ``async def fn(wf, input) -> result``."""


@dataclass(eq=False)
class WorkflowDefinition:
    """A registered function workflow: the function, its trigger and its limits."""

    name: str
    fn: WorkflowFn
    version: str = "1"
    on: Pattern | None = None
    where: Callable[[Event], bool] | None = None
    key: Callable[[Event], Any] | None = None
    limiter: Limiter = field(default_factory=Limiter)
    concurrency_key: Callable[[Any], Any] | None = None

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
            WorkflowFailedError: it ended failed, compensated or cancelled.
            TimeoutError: ``timeout`` passed first.
        """
        async with asyncio.timeout(timeout):
            state = await self.engine._wait_terminal(self.workflow_id)
        if state.status is WorkflowStatus.COMPLETED:
            return state.result
        raise WorkflowFailedError(self.workflow_id, str(state.status), state.error)
