"""``contexten worker``: run an App's handlers and workflows without serving HTTP.

The other half of ``contexten serve --no-dispatch``: the web process stores webhooks, the
worker (sharing the store: one SQLite file, or PostgreSQL) delivers them to the handlers and
drives the workflows. Any number of workers (and ``serve`` processes that dispatch) share
the subscriptions by partition leases; see ``contexten workers`` for who holds what.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from contexten.cli._common import fail, store_wait_option
from contexten.cli.serve import resolve_app
from contexten.exceptions import ContextenError
from contexten.observability.logging import configure_logging, get_logger
from contexten.observability.redaction import redact_url

__all__ = ["worker"]

_log = get_logger("contexten.cli")


@click.command()
@click.option(
    "--app",
    "reference",
    default=None,
    help="The App: module:attr or path/to/file.py:attr (default: examples/devteam.py:app if "
    "it exists).",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Event store URL for an App built without one (sets CONTEXTEN_STORE_URL).",
)
@store_wait_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def worker(reference: str | None, store_url: str | None, store_wait: float, log_level: str) -> None:
    """Run an App's handlers and workflows until SIGINT/SIGTERM (no HTTP)."""
    configure_logging(level=logging.getLevelName(log_level.upper()))
    try:
        app, origin = resolve_app(reference, store_url, Path.cwd())
    except ContextenError as e:
        fail(str(e))
    if app.store_open_wait is None:
        app.store_open_wait = store_wait
    _log.info(
        "worker starting",
        app=origin,
        store=redact_url(app.store.url),
        subscriptions=len(app.subscriptions),
    )
    app.run()
