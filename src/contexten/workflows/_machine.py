"""A live state-machine instance: records each event's decision, then runs the actions.

The engine's tail hands an instance its events in log order and waits until their decisions
(``transitioned`` or ``transition_rejected``) are committed before it moves its checkpoint;
actions run afterwards, one at a time, as durable steps. Every decision records the event's
log position, so an event seen again (after a restart, or by a second engine) is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from contexten.events.envelope import Event
from contexten.exceptions import StoreClosed, StoreError, WrongExpectedVersion
from contexten.store.base import Append, RecordedEvent, StreamState
from contexten.workflows._instance import lifecycle_event
from contexten.workflows.history import (
    WorkflowState,
    WorkflowStatus,
    apply,
    error_info,
    fold,
    history_event,
    public_stream,
    stream_name,
)
from contexten.workflows.state_machine import StateMachine
from contexten.workflows.steps import StepInfo, execute_step

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["MachineInstance", "pending_actions"]

_log = logging.getLogger("contexten.workflows")


def pending_actions(state: WorkflowState) -> list[int]:
    """Call numbers of transitions whose action has not completed, oldest first."""
    out = []
    for seq, op in sorted(state.ops.items()):
        if op.kind != "transition" or not op.name:
            continue
        action = state.ops.get(seq + 1)
        entry = _transition_entry(state, seq)
        if entry is not None and entry.get("action") and (action is None or not action.done):
            out.append(seq)
    return out


def _transition_entry(state: WorkflowState, seq: int) -> dict[str, Any] | None:
    for entry in state.entries:
        if entry.kind == "transitioned" and entry.data.get("seq") == seq:
            return dict(entry.data)
    return None


class MachineInstance:
    """One state-machine instance, live in this engine."""

    def __init__(
        self,
        engine: WorkflowEngine,
        machine: StateMachine,
        workflow_id: str,
        state: WorkflowState | None,
    ) -> None:
        self.engine = engine
        self.machine = machine
        self.workflow_id = workflow_id
        self.stream = stream_name(workflow_id)
        self.state = state or WorkflowState(workflow_id)
        self._lock = asyncio.Lock()
        self._actions: deque[int] = deque()
        self._worker: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Nothing queued or running (the engine may drop this object)."""
        return not self._actions and self._worker is None and not self._lock.locked()

    async def _reload(self) -> None:
        self.state = fold(await self.engine.store.read_stream(self.stream), self.workflow_id)

    async def _commit(self, events: list[Event], extra: list[Append] | None = None) -> None:
        expected = self.state.stream_version or StreamState.NO_STREAM
        results = await self.engine.store.commit(
            [Append(self.stream, events, expected), *(extra or [])]
        )
        first = results[0].version - len(events) + 1
        for offset, event in enumerate(events):
            rec = RecordedEvent(
                results[0].first_position + offset,
                self.stream,
                first + offset,
                self.engine.clock.now(),
                event,
            )
            apply(self.state, rec)

    async def deliver(self, records: list[RecordedEvent]) -> None:
        """Decide and record each of ``records`` (in order); queue the actions taken."""
        async with self._lock:
            for rec in records:
                for _ in range(10):
                    try:
                        await self._decide(rec)
                        break
                    except WrongExpectedVersion:
                        await self._reload()
                else:
                    _log.error(
                        "state machine %s: could not record %s", self.workflow_id, rec.event.id
                    )
        self._kick()

    async def _decide(self, rec: RecordedEvent) -> None:
        st = self.state
        m = self.machine
        event = rec.event
        wid = self.workflow_id
        if not st.exists:
            decision = m.decide(m.initial, event)
            if decision.transition is None:
                return
            started = {
                "workflow_id": wid,
                "name": m.name,
                "version": m.version,
                "kind": "state_machine",
                "initial": m.initial,
                "key": wid[len(m.name) + 1 :],
                "trigger_event_id": event.id,
                "after": rec.position,
            }
            events = [history_event("started", started, wid)]
            source = m.initial
        else:
            if rec.position <= st.last_position or st.terminal:
                return
            source = st.sm_state or m.initial
            if source in m.terminal_states:
                return
            decision = m.decide(source, event)
            events = []
        base = {"event_id": event.id, "event_type": event.type, "position": rec.position}
        t = decision.transition
        if t is None:
            data = {**base, "state": source, "reason": decision.reason}
            events.append(history_event("transition_rejected", data, wid))
            await self._commit(events)
            return
        seq = max(st.max_seq, st.reserved_seq) + 1
        action = getattr(t.action, "__qualname__", None) or ("action" if t.action else None)
        data = {**base, "seq": seq, "source": source, "to": t.to, "transition": t.label}
        data["action"] = action
        events.append(history_event("transitioned", data, wid))
        await self._commit(events)
        if t.action is not None:
            self._actions.append(seq)
        elif t.to in m.terminal_states and not st.blocked:
            await self._end("completed", {"result": {"state": t.to}})

    async def _end(self, kind: str, data: dict[str, Any]) -> None:
        event = history_event(kind, data, self.workflow_id)
        public = lifecycle_event(self.state, kind, {"state": self.state.sm_state, **data})
        await self._commit([event], [Append(public_stream(self.workflow_id), [public])])
        self.engine.stats.record_end(self.state, kind, data)

    async def _block(self, message: str) -> None:
        """Stop an instance whose history the current machine cannot replay: ``blocked``,
        not failed. Its events are still decided and recorded; no action runs until an
        operator redrives it (after fixing the code) or cancels it."""
        if self.state.blocked or self.state.terminal:
            return
        err = {"type": "NondeterminismError", "message": message, "non_retryable": True}
        data = {"reason": "nondeterminism", "error": err, "version": self.state.version}
        public = lifecycle_event(self.state, "blocked", {"error": err, "version": data["version"]})
        await self._commit(
            [history_event("blocked", data, self.workflow_id)],
            [Append(public_stream(self.workflow_id), [public])],
        )
        self.engine.stats.blocked[self.state.name] += 1
        _log.error("state machine %s blocked: %s", self.workflow_id, message)

    def resume(self) -> None:
        """Queue the actions the history shows as not done (after a restart or redrive)."""
        for seq in pending_actions(self.state):
            if seq not in self._actions:
                self._actions.append(seq)
        self._kick()

    def _kick(self) -> None:
        if self._actions and self._worker is None and self.engine.running:
            self._worker = asyncio.create_task(self._run_actions(), name=f"sm:{self.workflow_id}")

    async def _run_actions(self) -> None:
        try:
            while self._actions:
                seq = self._actions[0]
                try:
                    await self._run_action(seq)
                except WrongExpectedVersion:
                    try:
                        await self._reload()
                    except StoreClosed:
                        raise
                    except StoreError as e:  # still unreachable: the next try reloads again
                        _log.warning(
                            "state machine %s: store error, retrying: %s", self.workflow_id, e
                        )
                        await asyncio.sleep(0.5)
                    continue
                except StoreError as e:
                    _log.warning("state machine %s: store error, retrying: %s", self.workflow_id, e)
                    await asyncio.sleep(0.5)
                    continue
                self._actions.popleft()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("state machine %s: engine error", self.workflow_id)
        finally:
            self._worker = None
            self.engine._machine_idle(self)

    async def _run_action(self, seq: int) -> None:
        async with self._lock:
            st = self.state
            done = st.ops.get(seq + 1)
            entry = _transition_entry(st, seq)
            if st.terminal or st.blocked or entry is None or (done is not None and done.done):
                return  # a blocked instance runs nothing until an operator redrives it
            t = next((t for t in self.machine.transitions if t.label == entry["transition"]), None)
        if t is None or t.action is None:
            message = (
                f"transition {entry['transition']!r} has no action in the current code; the "
                "state machine changed under an in-flight instance"
            )
            async with self._lock:
                await self._block(message)
            return
        rec = await self.engine.store.get_event(entry["event_id"])
        if rec is None:
            raise StoreError(f"event {entry['event_id']} of {self.workflow_id} is missing")
        name = entry.get("action") or "action"
        outcome = await execute_step(
            t.action,
            (rec.event,),
            {},
            info=StepInfo(self.workflow_id, seq + 1, name),
            policy=t.retry or self.engine.default_retry,
            clock=self.engine.clock,
            default_timeout=self.engine.default_step_timeout,
        )
        async with self._lock:
            if outcome.ok:
                data = {"seq": seq + 1, "name": name, "result": outcome.value}
                await self._commit([history_event("step_completed", data, self.workflow_id)])
                if entry["to"] in self.machine.terminal_states:
                    await self._end("completed", {"result": {"state": entry["to"]}})
                return
            assert outcome.error is not None
            err = error_info(outcome.error)
            data = {"seq": seq + 1, "name": name, "error": err, "attempts": outcome.attempts}
            await self._commit([history_event("step_failed", data, self.workflow_id)])
            await self._end("failed", {"error": err, "failed_seq": seq + 1})
            self._actions.clear()
            self._actions.append(seq)  # popped by the caller

    async def cancel(self) -> bool:
        """End the instance ``cancelled`` (state machines have nothing to compensate)."""
        async with self._lock:
            for _ in range(10):
                if self.state.terminal or not self.state.exists:
                    return False
                try:
                    await self._end("cancelled", {})
                    return True
                except WrongExpectedVersion:
                    await self._reload()
        return False

    @property
    def status(self) -> WorkflowStatus:
        """The instance's status as last folded."""
        return self.state.status
