"""The ``contexten`` command line."""

from __future__ import annotations

import click

from contexten.cli.demo import demo
from contexten.cli.dlq import dlq
from contexten.cli.events import events
from contexten.cli.projections import projections
from contexten.cli.replay import replay
from contexten.cli.schedules import schedules
from contexten.cli.serve import serve
from contexten.cli.simulate import simulate
from contexten.cli.store import store
from contexten.cli.subscriptions import subscriptions
from contexten.cli.tokens import tokens
from contexten.cli.work_items import work_items
from contexten.cli.worker import worker
from contexten.cli.workers import workers
from contexten.cli.workflows import workflows

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="contexten")
def cli() -> None:
    """Contexten: a durable, event-driven orchestrator for engineering automation."""


cli.add_command(events)
cli.add_command(dlq)
cli.add_command(workflows)
cli.add_command(projections)
cli.add_command(work_items)
cli.add_command(serve)
cli.add_command(simulate)
cli.add_command(demo)
cli.add_command(worker)
cli.add_command(tokens)
cli.add_command(replay)
cli.add_command(schedules)
cli.add_command(workers)
cli.add_command(store)
cli.add_command(subscriptions)


def main() -> None:
    """Entry point of the ``contexten`` console script."""
    cli()
