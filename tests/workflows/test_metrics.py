"""The workflow engine's metrics move: instances by status, starts, step durations, ends,
failures, pending timers and the tail's lag."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from contexten import App, Event, Workflow
from contexten.clock import WallClock
from contexten.exceptions import NonRetryableError, WorkflowFailedError
from contexten.observability.app_metrics import instrument_app
from contexten.observability.metrics import Metrics
from contexten.workflows import WorkflowStatus

from .conftest import HANG_GUARD, until, until_status


async def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a fresh scrape, by name and sorted labels."""
    await metrics.refresh()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


async def test_workflow_metrics_move() -> None:
    app = App("memory://", clock=WallClock())
    metrics = Metrics()
    instrument_app(metrics, app.health, app.workflows.stats, app.read.workflow_counts)

    async def charge(amount: int) -> int:
        if amount < 0:
            raise NonRetryableError("refunds are not charges")
        return amount

    @app.workflow("pay", on="shop.order")
    async def pay(wf: Workflow, event: Event) -> int:
        charged: int = await wf.step(charge, event.data["amount"])
        if event.data.get("nap"):
            await wf.sleep(timedelta(hours=1))
        return charged

    async with app:
        before = await scrape(metrics)
        assert before[("contexten_workflow_timers_pending", ())] == 0
        assert before[("contexten_workflow_instances", (("status", "completed"),))] == 0
        assert ("contexten_workflows_started_total", (("workflow", "pay"),)) not in before

        for amount in (5, -1):
            order = Event(type="shop.order", source="shop", subject=str(amount))
            await app.publish(order.replace(data={"amount": amount}))
        napping = Event(type="shop.order", source="shop", data={"amount": 7, "nap": True})
        await app.publish(napping)
        await until_status(app.workflows, f"pay:{napping.id}", WorkflowStatus.SLEEPING)

        async def two_ended() -> bool:
            return sum(app.workflows.stats.ended.values()) == 2

        await until(two_ended)
        await app.drain(HANG_GUARD)

        async def caught_up() -> bool:
            return (await scrape(metrics))[("contexten_workflow_tail_lag", ())] == 0

        await until(caught_up)
        after = await scrape(metrics)
        wf = (("workflow", "pay"),)
        assert after[("contexten_workflows_started_total", wf)] == 3
        assert after[("contexten_workflows_ended_total", (("status", "completed"), *wf))] == 1
        failed = (("cause", "NonRetryableError"), *wf)
        assert after[("contexten_workflows_failed_total", failed)] == 1
        step = (("step", "test_workflow_metrics_move.<locals>.charge"), *wf)
        assert after[("contexten_workflow_step_duration_seconds_count", step)] == 3
        assert after[("contexten_workflow_step_duration_seconds_sum", step)] > 0
        assert after[("contexten_workflow_timers_pending", ())] == 1  # the nap
        assert after[("contexten_workflow_instances", (("status", "completed"),))] == 1
        assert after[("contexten_workflow_instances", (("status", "failed"),))] == 1
        assert after[("contexten_workflow_instances", (("status", "sleeping"),))] == 1

        await app.cancel_workflow(f"pay:{napping.id}")
        with contextlib.suppress(WorkflowFailedError):  # it ends cancelled
            await app.workflows.get_handle(f"pay:{napping.id}").result(HANG_GUARD)
        assert (await scrape(metrics))[("contexten_workflow_timers_pending", ())] == 0
    stopped = await scrape(metrics)
    assert ("contexten_workflow_tail_lag", ()) not in stopped  # no engine runs: no lag
