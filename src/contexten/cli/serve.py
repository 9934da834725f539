"""``contexten serve``: run an App's webhooks, API, health and metrics on uvicorn.

Which App: ``--app module:attr`` or ``--app path/to/file.py:attr``; without ``--app``, the
default example ``examples/devteam.py:app`` when that file exists under the current
directory, else a bare ``App()`` (ingress and API only, no handlers). The log says which.

``--store URL`` works by setting ``CONTEXTEN_STORE_URL`` before the app module is imported:
an App built without an explicit store (``App()``) reads it. An App built with its own store
(``App("sqlite:///x.db")``) keeps it, and ``--store`` naming another store is refused, rather
than silently writing somewhere else than asked.

Everything but the webhooks and ``/healthz``/``/readyz`` needs ``Authorization: Bearer
<token>``. With no token anywhere (no ``CONTEXTEN_ADMIN_TOKEN``, none ever created in the
store), the first start creates an admin token and prints it once, with a login URL, to
stderr (outside the JSON log); later starts print nothing. ``contexten tokens`` manages the
others. The dashboard is served at ``/`` (:mod:`contexten.dashboard`); the login URL opens
it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import click

from contexten.app import App
from contexten.cli._common import fail, store_wait_option
from contexten.exceptions import ConfigurationError, ContextenError
from contexten.ingress.config import IngressConfig
from contexten.ingress.frontdoor import raise_open_files_limit
from contexten.ingress.loader import load_app
from contexten.ingress.server import serve as serve_app
from contexten.observability.logging import configure_logging, get_logger
from contexten.observability.redaction import redact_url
from contexten.security.hosts import ENV_ALLOWED_HOSTS
from contexten.security.tokens import IssuedToken
from contexten.store import create_store

__all__ = ["DEFAULT_APP", "announce_bootstrap_token", "resolve_app", "serve"]

DEFAULT_APP: Final = "examples/devteam.py:app"
"""What ``contexten serve`` runs without ``--app``, when the file exists."""
_STORE_ENV: Final = "CONTEXTEN_STORE_URL"

_log = get_logger("contexten.cli")


def _same_store(url: str, app: App) -> bool:
    try:
        return create_store(url).url == app.store.url
    except ContextenError:
        return False


def resolve_app(reference: str | None, store_url: str | None, cwd: Path) -> tuple[App, str]:
    """Load the App to serve and say which one it is (see the module docstring).

    Args:
        reference: ``--app``, or None for the default.
        store_url: ``--store``, or None.
        cwd: where the default example and relative references are looked for.

    Returns:
        The App, and a description of where it came from (for the log).

    Raises:
        AppLoadError: ``--app`` names nothing loadable.
        ConfigurationError: ``--store`` conflicts with the store the App was built with.
    """
    if store_url:
        os.environ[_STORE_ENV] = store_url  # read by App() while the module is imported
    if reference is None and (cwd / DEFAULT_APP.partition(":")[0]).is_file():
        reference = DEFAULT_APP
    if reference is None:
        return App(), "a bare App (webhook ingress and API only; no handlers)"
    app = load_app(reference, cwd=cwd)
    if store_url and not _same_store(store_url, app):
        raise ConfigurationError(
            f"--store {redact_url(store_url)!r} was given, but {reference} built its App with "
            f"its own store ({redact_url(app.store.url)!r}); build it as App() to let "
            "--store (or CONTEXTEN_STORE_URL) choose, or drop --store"
        )
    return app, reference


def announce_bootstrap_token(issued: IssuedToken, url: str) -> None:
    """Print the first admin token once, Jupyter-style, on standard output.

    Never into the log: stderr carries log records only (one JSON line each off a terminal),
    and a token must not end up in a log collector.
    """
    click.echo(
        "\n"
        "  No API token was configured, so an admin token was created (shown this once;\n"
        "  only its hash is stored). Keep it, or revoke it once you made your own with\n"
        "  `contexten tokens create`:\n\n"
        f"      {issued.token}\n\n"
        "  API:        curl -H 'Authorization: Bearer <token>' "
        f"{url}/api/v1/events\n"
        f"  Dashboard:  {url}/?token={issued.token}\n"
    )


@click.command()
@click.option(
    "--app",
    "reference",
    default=None,
    help=f"The App: module:attr or path/to/file.py:attr (default: {DEFAULT_APP} if it "
    "exists, else a bare App).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Event store URL for an App built without one (sets CONTEXTEN_STORE_URL; "
    "default: CONTEXTEN_STORE_URL, else sqlite:///contexten.db).",
)
@click.option(
    "--max-pending-commits",
    type=click.IntRange(min=1),
    default=None,
    help="Shed webhooks (429) when this many already wait on the store [default: 2048].",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=None,
    help="Most open connections; beyond it the one idle longest is closed, or the new one "
    "refused (503) when all are busy [default: 4096].",
)
@click.option(
    "--keep-alive-timeout",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds a connection may stay open without sending a request [default: 5].",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds a client gets to send a request's headers, else 408 [default: 10].",
)
@click.option(
    "--max-header-bytes",
    type=click.IntRange(min=1024),
    default=None,
    help="Largest request header section, else 431 [default: 16384].",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Seconds in-flight requests get to finish at shutdown.",
)
@click.option(
    "--dispatch/--no-dispatch",
    default=True,
    show_default=True,
    help="Run handlers and workflows here too; --no-dispatch only stores webhooks, for a "
    "separate `contexten worker` on the same store.",
)
@click.option(
    "--metrics-public/--no-metrics-public",
    default=False,
    show_default=True,
    help="Serve /metrics without a token (for a scraper on a private network); by default "
    "it needs the viewer role.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@store_wait_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    reference: str | None,
    host: str,
    port: int,
    store_url: str | None,
    max_pending_commits: int | None,
    max_connections: int | None,
    keep_alive_timeout: int | None,
    header_timeout: float | None,
    max_header_bytes: int | None,
    graceful_timeout: int,
    dispatch: bool,
    metrics_public: bool,
    access_log: bool,
    store_wait: float,
    log_level: str,
) -> None:
    """Serve an App: webhooks, /healthz, /readyz, /metrics and /api/v1, until SIGINT/SIGTERM."""
    level = logging.getLevelName(log_level.upper())
    configure_logging(level=level)  # uvicorn's records too (IngressServer routes them)
    try:
        app, origin = resolve_app(reference, store_url, Path.cwd())
        given = {
            "max_pending_commits": max_pending_commits,
            "max_connections": max_connections,
            "keep_alive_timeout": keep_alive_timeout,
            "header_timeout": header_timeout,
            "max_header_bytes": max_header_bytes,
        }
        overrides: dict[str, object] = {
            name: value for name, value in given.items() if value is not None
        }
        overrides["metrics_public"] = metrics_public
        config = IngressConfig.from_env(None, bind_host=host, **overrides)
    except ContextenError as e:
        fail(str(e))
    app.dispatch = app.dispatch and dispatch
    if app.store_open_wait is None:
        app.store_open_wait = store_wait
    unsigned = [p for p in ("github", "linear", "slack") if not config.secrets(p)]
    _log.info(
        "app loaded",
        app=origin,
        store=redact_url(app.store.url),
        subscriptions=len(app.subscriptions),
        dispatch=app.dispatch,
        allowed_hosts=list(config.allowed_hosts),
        metrics_public=config.metrics_public,
    )
    if host in ("0.0.0.0", "::") and not os.environ.get(ENV_ALLOWED_HOSTS):
        _log.warning(
            "listening on every interface, but only these Host names are answered (the "
            "webhooks excepted); set CONTEXTEN_ALLOWED_HOSTS to the names clients use",
            allowed_hosts=list(config.allowed_hosts),
        )
    before, after = raise_open_files_limit()
    _log.info("open files limit", soft=after, raised_from=before if before != after else None)
    if unsigned:
        _log.warning(
            "no webhook secret configured: these platforms' webhooks are refused (401)",
            platforms=unsigned,
        )
    # Imported here: the dashboard reuses the CLI timeline's wording (contexten.cli._timeline),
    # so importing it with the CLI package would be circular.
    from contexten.dashboard import dashboard_routes

    try:
        serve_app(
            app,
            host,
            port,
            config=config,
            graceful_timeout=graceful_timeout,
            access_log=access_log,
            announce_bootstrap=announce_bootstrap_token,
            extra_routes=dashboard_routes(app),
        )
    except (ContextenError, RuntimeError) as e:
        fail(str(e))
