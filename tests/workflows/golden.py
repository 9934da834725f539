"""Example workflows whose recorded histories are kept as golden files in ``histories/``.

``test_replay.py`` replays every golden history against these functions, so a change to them
that would break an in-flight instance fails the tests. When a change is deliberate (a new
workflow version), record the histories again::

    .venv/bin/python tests/workflows/golden.py

and review the diff of ``tests/workflows/histories/``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contexten.events import Event
from contexten.exceptions import NonRetryableError, WorkflowTimeoutError
from contexten.resilience.retry import RetryPolicy
from contexten.store.memory import MemoryEventStore
from contexten.testing import VirtualClock, export_history, save_history
from contexten.workflows import WorkflowEngine, WorkflowStatus

HISTORIES = Path(__file__).with_name("histories")

ONCE = RetryPolicy.no_retries()


async def reserve_stock(order: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Reserve the order's items (an inventory API)."""
    return {"reservation": f"res-{order['id']}", "key": idempotency_key}


async def release_stock(order: dict[str, Any], result: dict[str, Any]) -> None:
    """Undo :func:`reserve_stock`."""


async def charge_card(order: dict[str, Any]) -> dict[str, Any]:
    """Charge the customer (a payment API)."""
    if order.get("declined"):
        raise NonRetryableError("card declined")
    return {"charge": f"ch-{order['id']}", "amount": order["amount"]}


async def refund_card(order: dict[str, Any], result: dict[str, Any]) -> None:
    """Undo :func:`charge_card`."""


async def ship(order: dict[str, Any], carrier: str) -> str:
    """Hand the parcel to the carrier."""
    return f"{carrier}-{order['id']}"


async def order_workflow(wf: Any, order: dict[str, Any]) -> dict[str, Any]:
    """Reserve, charge, wait for the payment to clear, wait a day, ship."""
    reservation = await wf.step(reserve_stock, order, compensate=release_stock, retry=ONCE)
    charge = await wf.step(charge_card, order, compensate=refund_card, retry=ONCE)
    cleared = await wf.wait_for(
        "payments.charge.cleared", correlation_id=order["id"], timeout=timedelta(hours=4)
    )
    await wf.sleep(timedelta(days=1))
    tracking = await wf.step(ship, order, cleared.data["carrier"], retry=ONCE)
    return {
        "reservation": reservation["reservation"],
        "charge": charge["charge"],
        "tracking": tracking,
    }


async def approval_workflow(wf: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Ask for an approval, remind once, give up after a deadline."""
    token = str(wf.uuid4())
    asked_at = wf.now()
    await wf.emit(Event(type="approvals.requested", data={"token": token, **request}))
    try:
        answer = await wf.wait_for(
            "approvals.answered", match=lambda e: e.data["token"] == token, timeout=3600
        )
    except WorkflowTimeoutError:
        await wf.emit(Event(type="approvals.reminded", data={"token": token}))
        try:
            answer = await wf.wait_for(
                "approvals.answered", match=lambda e: e.data["token"] == token, timeout=3600
            )
        except WorkflowTimeoutError:
            return {"approved": False, "reason": "no answer", "asked_at": asked_at.isoformat()}
    return {"approved": bool(answer.data["approved"]), "asked_at": asked_at.isoformat()}


WORKFLOWS = {"order": order_workflow, "approval": approval_workflow}


def register(engine: WorkflowEngine) -> None:
    """Register the golden workflows on ``engine``."""
    for name, fn in WORKFLOWS.items():
        engine.register(fn, name=name)


async def _settled(engine: WorkflowEngine, wid: str, *statuses: WorkflowStatus) -> None:
    for _ in range(100_000):
        if (await engine.get_workflow(wid)).status in statuses:
            return
        await asyncio.sleep(0.001)
    raise TimeoutError(f"{wid} never reached {statuses}")


async def record() -> None:
    """Run the scenarios on a memory store and save each instance's history."""
    store = MemoryEventStore()
    await store.open()
    clock = VirtualClock(start=datetime(2030, 1, 1, tzinfo=UTC))
    engine = WorkflowEngine(store, clock=clock)
    register(engine)
    await engine.start()
    order = {"id": "o-1", "amount": 42}
    await engine.start_workflow("order", order, "order-completed")
    await engine.start_workflow("order", {**order, "id": "o-2", "declined": True}, "order-declined")
    await engine.start_workflow("order", {**order, "id": "o-3"}, "order-in-flight")
    await engine.start_workflow("order", {**order, "id": "o-4"}, "order-not-cleared")
    for wid in ("order-completed", "order-in-flight", "order-not-cleared"):
        await _settled(engine, wid, WorkflowStatus.WAITING)
    for oid in ("o-1", "o-3"):
        cleared = Event(type="payments.charge.cleared", correlation_id=oid, data={"carrier": "ups"})
        await store.append("payments", [cleared])
    await _settled(engine, "order-in-flight", WorkflowStatus.SLEEPING)
    await clock.advance(timedelta(hours=5))  # o-4 times out; o-1 and o-3 sleep on
    in_flight = await export_history(store, "order-in-flight")  # taken mid-sleep
    await engine.start_workflow("approval", {"what": "deploy"}, "approval-yes")
    await engine.start_workflow("approval", {"what": "drop db"}, "approval-ignored")
    await _settled(engine, "approval-yes", WorkflowStatus.WAITING)
    token = (await engine.get_workflow("approval-yes")).history[1].data["value"]
    await store.append(
        "approvals", [Event(type="approvals.answered", data={"token": token, "approved": True})]
    )
    await clock.advance(timedelta(hours=3))
    await clock.advance(timedelta(days=1))
    await _settled(engine, "order-completed", WorkflowStatus.COMPLETED)
    await engine.stop()
    HISTORIES.mkdir(exist_ok=True)
    for info in await engine.list_workflows():
        history = in_flight if info.workflow_id == "order-in-flight" else None
        history = history or await export_history(store, info.workflow_id)
        save_history(history, HISTORIES / f"{info.workflow_id}.json")
    await store.close()


if __name__ == "__main__":
    asyncio.run(record())
