"""``contexten workers``: the live workers, the partitions they hold, lag and heartbeat age."""

from __future__ import annotations

import click

from contexten.bus.workers import WorkersReport, workers_report
from contexten.cli._common import echo_json, run_async, store_option, with_store

__all__ = ["workers"]


@click.command()
@store_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@run_async
async def workers(store_url: str | None, as_json: bool) -> None:
    """List live workers and how each subscription's partitions are shared among them."""
    report: WorkersReport = await with_store(store_url, workers_report)
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(f"log head: {report.head}")
    if not report.workers:
        click.echo("no live workers", err=True)
    for w in report.workers:
        info = w.worker
        state = "draining" if info.draining else "live"
        held = ", ".join(
            f"{g.removeprefix('sub:')}: {len(ns)} (lag {w.lag[g]})"
            for g, ns in w.partitions.items()
        )
        folds = f"  projections: {', '.join(w.projections)}" if w.projections else ""
        click.echo(
            f"{info.worker_id:40} {state:8} heartbeat {info.heartbeat_age:5.1f} s ago  "
            f"{info.meta}  {held or 'no partitions'}{folds}"
        )
    for g in report.groups:
        click.echo(
            f"subscription {g.group.removeprefix('sub:'):30} partitions {g.held}/{g.partitions} "
            f"held  checkpoint {g.checkpoint}  lag {g.lag}"
        )
