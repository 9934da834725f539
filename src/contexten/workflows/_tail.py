"""The engine's tail of the global log: triggers, state-machine events, waits, control.

The tail reads the log from the engine's checkpoint in batches. For each ordinary event it
resolves matching ``wait_for`` calls, starts the workflows the event triggers and feeds the
state machines that listen to it; for each history event of an instance it notices
cancellation and redrive requests (possibly appended by another process). The checkpoint
moves only after a batch's starts and state-machine decisions are committed, and both are
idempotent, so re-reading a batch after a crash changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

from contexten.exceptions import StoreClosed, StoreError
from contexten.store.base import RecordedEvent, is_system_stream
from contexten.workflows import admin
from contexten.workflows.history import CANCEL_REQUESTED, MIGRATED, REDRIVEN, workflow_id_of
from contexten.workflows.state_machine import StateMachine

if TYPE_CHECKING:
    from contexten.workflows.definition import WorkflowDefinition
    from contexten.workflows.engine import WorkflowEngine

__all__ = ["prefill", "run_tail"]

_log = logging.getLogger("contexten.workflows")

_CHECKPOINT_EVERY: Final = 1.0  # seconds between checkpoint saves when nothing forced one


async def prefill(engine: WorkflowEngine, start: int, end: int) -> None:
    """Buffer the events in ``(start, end]`` so resumed waits look back in memory."""
    engine.waits.reset(start)
    position = start
    while position < end:
        page = await engine.store.read_all(after=position, limit=min(1000, end - position))
        if not page:
            break
        for rec in page:
            if rec.position > end:
                break
            if is_system_stream(rec.stream):
                engine.waits.advance(rec.position)
            else:
                engine.waits.observe(rec)
        position = page[-1].position
    engine.waits.advance(end)


async def run_tail(engine: WorkflowEngine) -> None:
    """Process the log from :attr:`WorkflowEngine.tail_position` until the engine stops.

    A store error is logged and retried here; anything else ends this run with the error,
    and the engine's supervisor starts the tail again (with backoff) from the last batch it
    finished, which re-processing leaves unchanged.
    """
    position = saved = engine.tail_position
    last_save = time.monotonic()
    while engine.running:
        try:
            batch = await engine.store.read_all(after=position, limit=engine.batch_size)
            if not batch:
                if saved != position:
                    await engine.store.save_checkpoint(engine.checkpoint, position)
                    saved = position
                await engine.store.wait_for_new(position, timeout=1.0)
                continue
            forced = await _process(engine, batch)
            position = engine.tail_position = engine.stats.tail_position = batch[-1].position
            if forced or time.monotonic() - last_save > _CHECKPOINT_EVERY:
                await engine.store.save_checkpoint(engine.checkpoint, position)
                saved, last_save = position, time.monotonic()
        except asyncio.CancelledError:
            raise
        except StoreClosed:
            return
        except StoreError as e:
            _log.warning("workflow engine tail: store error, retrying: %s", e)
            await asyncio.sleep(0.5)


async def _process(engine: WorkflowEngine, batch: list[RecordedEvent]) -> bool:
    """Hand a batch of the log to waits, triggers and machines; True if it started work."""
    starts: list[tuple[WorkflowDefinition, RecordedEvent]] = []
    machine_events: dict[str, tuple[StateMachine, list[RecordedEvent]]] = {}
    for rec in batch:
        if is_system_stream(rec.stream):
            engine.waits.advance(rec.position)
            engine.owners.see(rec)
            if rec.event.type in (CANCEL_REQUESTED, REDRIVEN, MIGRATED):
                _on_control(engine, rec)
            continue
        engine.waits.observe(rec)
        event = rec.event
        for definition in engine._definitions.values():
            try:
                if definition.triggered_by(event):
                    starts.append((definition, rec))
            except Exception:
                _log.exception("where= of workflow %r raised on %s", definition.name, event.id)
        for machine in engine._machines.values():
            if not machine.listens_to(event.type):
                continue
            try:
                key = machine.key_of(event)
            except Exception:
                _log.exception("key= of state machine %r raised on %s", machine.name, event.id)
                continue
            if key is None:
                continue
            wid = machine.instance_id(key)
            machine_events.setdefault(wid, (machine, []))[1].append(rec)
    if not starts and not machine_events:
        return False
    jobs = [_trigger(engine, d, rec) for d, rec in starts]
    jobs.extend(
        engine._machine_instance(m, wid, None).deliver(recs)
        for wid, (m, recs) in machine_events.items()
    )
    await asyncio.gather(*jobs)
    return True


async def _trigger(
    engine: WorkflowEngine, definition: WorkflowDefinition, rec: RecordedEvent
) -> None:
    try:
        wid = definition.instance_id(rec.event)
    except Exception:
        _log.exception("key= of workflow %r raised on %s", definition.name, rec.event.id)
        return
    await engine.start_workflow(definition.name, rec.event, wid, _trigger=rec)


def _on_control(engine: WorkflowEngine, rec: RecordedEvent) -> None:
    wid = workflow_id_of(rec.stream)
    if wid is None:
        return
    if rec.event.type == CANCEL_REQUESTED and wid in engine._live:
        engine._live[wid].request_cancel()
    elif wid not in engine._live:  # redriven, migrated, or a cancel of a blocked instance
        task = asyncio.ensure_future(_redrive_local(engine, wid))
        engine._background.add(task)
        task.add_done_callback(engine._background.discard)


async def _redrive_local(engine: WorkflowEngine, workflow_id: str) -> None:
    state = await admin.load_state(engine.store, workflow_id)
    if state is not None and not state.terminal and engine.running:
        await engine._resume(state)
