"""The ``contexten`` command line."""

from __future__ import annotations

import click

from contexten.cli.dlq import dlq
from contexten.cli.events import events

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="contexten")
def cli() -> None:
    """Contexten: a durable, event-driven orchestrator for engineering automation."""


cli.add_command(events)
cli.add_command(dlq)


def main() -> None:
    """Entry point of the ``contexten`` console script."""
    cli()
