"""Serve an App over HTTP: its ingress, health, readiness, metrics and API, on uvicorn.

::

    from contexten.ingress.server import serve

    serve(app, host="127.0.0.1", port=8000)   # blocks until SIGINT/SIGTERM, then stops cleanly

:func:`create_server` builds the ASGI app for an :class:`~contexten.App`: the ingress over the
App's store, ``/readyz`` answering from ``App.health()`` (503 until the App runs with its
store reachable), ``/metrics`` with the dispatcher's gauges, and a lifespan that starts the
App when the server starts and stops it when the server stops.

:class:`IngressServer` runs that app on one uvicorn worker. On SIGINT or SIGTERM it shuts
down in this order: stop accepting connections, let in-flight requests finish (up to
``graceful_timeout`` seconds), stop the App (in-flight handlers get its ``shutdown_grace``;
the rest are redelivered at the next start), close the store; then :meth:`IngressServer.run`
returns normally, so the process exits 0. A second SIGINT forces an immediate exit (every
acknowledged webhook is already durable).

With ``announce_bootstrap``, a server whose store has never held an API token and which has
no ``CONTEXTEN_ADMIN_TOKEN`` creates an admin token once it has started (exactly one, even
when several processes start together on one store) and hands it, with the URL it listens
on, to that callback once listening (``contexten serve`` prints a login URL).

Connections go through the front door (:mod:`contexten.ingress.frontdoor`): idle and slow
clients are closed, header sections capped, the number of connections bounded, with the
limits of the :class:`IngressConfig`.

uvicorn picks ``uvloop`` and ``httptools`` when they are installed (they are dependencies
where they have wheels; ``bench/b3_ingress.py`` measures the difference), else the standard
asyncio loop and ``h11``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from contexten.app import App
from contexten.event_loop import loop_choice, serving_gc
from contexten.ingress.app import create_ingress_app
from contexten.ingress.config import IngressConfig
from contexten.ingress.frontdoor import ConnectionCollector, FrontDoorConfig, FrontDoorLimits
from contexten.observability.app_metrics import instrument_app
from contexten.observability.logging import get_logger
from contexten.observability.metrics import Metrics
from contexten.security.middleware import RouteAction
from contexten.security.tokens import IssuedToken, ensure_bootstrap_token

__all__ = ["BootstrapAnnouncer", "IngressServer", "create_server", "serve"]

BootstrapAnnouncer = Callable[[IssuedToken, str], None]
"""Called once with the first admin token and the base URL served (``http://host:port``)."""

_log = get_logger("contexten.server")
_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _build(
    app: App,
    config: IngressConfig | None,
    *,
    metrics: Metrics | None,
    extra_routes: Sequence[tuple[BaseRoute, RouteAction]],
    start: Callable[[], Awaitable[None]],
    close_store: bool,
) -> Starlette:
    metrics = metrics if metrics is not None else Metrics()
    instrument_app(metrics, app.health, app.workflows.stats, app.read.workflow_counts)

    async def close() -> None:
        await app.store.close()  # idempotent: a no-op when the App closed its own store

    from contexten.api import ReadAPI
    from contexten.api.openapi import read_api_paths

    return create_ingress_app(
        app.store,
        config,
        readiness=app.health,
        metrics=metrics,
        extra_routes=[*ReadAPI(app).routes(), *extra_routes],
        api_paths=read_api_paths(),
        projections=app.projections,
        on_startup=[start],
        on_shutdown=[app.stop, close] if close_store else [app.stop],
    )


def create_server(
    app: App,
    config: IngressConfig | None = None,
    *,
    metrics: Metrics | None = None,
    extra_routes: Sequence[tuple[BaseRoute, RouteAction]] = (),
    close_store: bool = False,
) -> Starlette:
    """The ASGI app that serves ``app``: webhooks into its store, and its health and metrics.

    Its lifespan starts the App (``app.start()``) when the server starts and stops it when
    the server stops, so handlers run in the serving process. Serve it with uvicorn
    (``lifespan="on"``), or use :class:`IngressServer`, which also handles signals.

    Args:
        app: the application; its store receives the webhooks (streams as ``App.publish``
            names them).
        config: secrets, caps and load shedding (default: :meth:`IngressConfig.from_env`).
        metrics: the registry ``/metrics`` serves (default: a fresh one); the App's
            dispatcher lag, dead letters and restarts are added to it.
        extra_routes: more routes to serve (a dashboard...), each with the action it needs.
        close_store: also close the store when the server stops, even when the App does not
            own it (the serving process is its last user).

    Returns:
        The Starlette app; ``state.metrics`` and ``state.config`` hold what it uses.
    """
    return _build(
        app,
        config,
        metrics=metrics,
        extra_routes=extra_routes,
        start=app.start,
        close_store=close_store,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the shutdown signal once it has shut down.

    uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown so that a host program sees
    it; here the graceful shutdown *is* the intended outcome, so serving simply returns.
    It also tells its owner when it listens (``on_listening``).
    """

    on_listening: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_listening is not None:
            self.on_listening()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be listened to from the main thread
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class IngressServer:
    """An App served by one uvicorn worker, shut down cleanly on SIGINT/SIGTERM.

    Args:
        app: the application to serve (started and stopped by the server).
        host: the interface to listen on.
        port: the TCP port (0: any free port; see :attr:`port` once started).
        config: the ingress configuration (default: from the environment, with ``host``
            among the allowed hosts).
        graceful_timeout: seconds in-flight requests get to finish at shutdown.
        access_log: log every request through the ``uvicorn.access`` logger.
        http: uvicorn's HTTP implementation: ``"auto"`` (httptools when installed), ``"h11"``
            or ``"httptools"``.
        loop: uvicorn's event loop: ``"auto"`` (uvloop when installed), ``"asyncio"`` or
            ``"uvloop"``; None: ``CONTEXTEN_EVENT_LOOP`` (see
            :func:`~contexten.event_loop.loop_choice`), else ``"auto"``.
        extra_routes: more routes to serve, each with the action it needs.
        close_store: close the store at shutdown even when the App does not own it.
        announce_bootstrap: create the first admin token when none is configured and call
            this with it once listening (see the module docstring); None: never create one.
    """

    def __init__(
        self,
        app: App,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        config: IngressConfig | None = None,
        graceful_timeout: int = 30,
        access_log: bool = False,
        http: str = "auto",
        loop: str | None = None,
        extra_routes: Sequence[tuple[BaseRoute, RouteAction]] = (),
        close_store: bool = True,
        announce_bootstrap: BootstrapAnnouncer | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self._startup_error: BaseException | None = None
        self._announce = announce_bootstrap
        self.bootstrap_token: IssuedToken | None = None
        """The admin token this server created at its first start, if it did."""
        self.asgi = _build(
            app,
            config if config is not None else IngressConfig.from_env(bind_host=host),
            metrics=None,
            extra_routes=extra_routes,
            start=self._start_app,
            close_store=close_store,
        )
        resolved: IngressConfig = self.asgi.state.config
        self.uvicorn_config = FrontDoorConfig(
            self.asgi,
            limits=FrontDoorLimits(
                keep_alive_timeout=resolved.keep_alive_timeout,
                header_timeout=resolved.header_timeout,
                max_header_bytes=resolved.max_header_bytes,
                max_connections=resolved.max_connections,
                retry_after=resolved.retry_after,
            ),
            host=host,
            port=port,
            loop=loop if loop is not None else loop_choice(),
            http=http,
            ws="none",
            lifespan="on",
            log_config=None,  # no handlers of uvicorn's own: see _route_uvicorn_logs
            access_log=access_log,
            server_header=False,
            timeout_graceful_shutdown=graceful_timeout,
            # Not uvicorn's limit_concurrency: it counts idle connections and refuses the
            # next *request* with 503, turning platforms away while attackers hold the
            # sockets. The front door's max_connections evicts the idle ones instead.
        )
        self.asgi.state.metrics.registry.register(ConnectionCollector(self.uvicorn_config))
        self._server = _Server(self.uvicorn_config)
        self._server.on_listening = self._listening
        _route_uvicorn_logs(access_log=access_log)

    async def _start_app(self) -> None:
        try:
            await self.app.start()
            if self._announce is not None and not self.asgi.state.tokens.has_admin_token:
                self.bootstrap_token = await ensure_bootstrap_token(self.app.store)
        except BaseException as e:
            self._startup_error = e  # uvicorn only logs it; serve() re-raises it
            raise

    @property
    def url(self) -> str | None:
        """The base URL served, once listening (a wildcard bind shows as 127.0.0.1)."""
        port = self.port
        if port is None:
            return None
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _listening(self) -> None:
        if self._announce is not None and self.bootstrap_token is not None and self.url:
            self._announce(self.bootstrap_token, self.url)

    @property
    def started(self) -> bool:
        """Whether the server is listening (the App has started)."""
        return bool(self._server.started)

    @property
    def port(self) -> int | None:
        """The port listened on, once started (useful with ``port=0``)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None

    def request_stop(self) -> None:
        """Begin the graceful shutdown (what SIGTERM does); :meth:`serve` then returns."""
        self._server.should_exit = True

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until :meth:`request_stop`, SIGINT or SIGTERM, then shut down cleanly.

        Args:
            sockets: already-bound listening sockets to serve on instead of host:port.

        Raises:
            Exception: whatever ``App.start()`` raised (the store is unreachable...); the
                server did not start.
            RuntimeError: the server did not start for another reason (logged by uvicorn).
        """
        # uvicorn exits the process (SystemExit) when startup fails: raise the cause instead.
        with contextlib.suppress(SystemExit):
            await self._server.serve(sockets=sockets)
        self._check_started()

    def run(self) -> None:
        """Like :meth:`serve`, in a new event loop (uvloop when installed, unless ``loop`` says
        otherwise).

        As it owns the process, it also tunes the cyclic garbage collector for serving (see
        :func:`~contexten.event_loop.serving_gc`).
        """
        with serving_gc(), contextlib.suppress(SystemExit):
            self._server.run()
        self._check_started()

    def _check_started(self) -> None:
        if self._startup_error is not None:
            raise self._startup_error
        if not self._server.started:
            raise RuntimeError("the server did not start (the address is in use?); see the log")


_UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.asgi")


def _route_uvicorn_logs(*, access_log: bool) -> None:
    """Send uvicorn's records to the root logger, where the process's one renderer is.

    uvicorn's own handlers and formatters (plain text, colour codes) are removed, so its
    server and access lines become JSON lines like every other (see
    :func:`~contexten.observability.logging.configure_logging`); their levels follow the
    root's. The access log is on only when asked for.
    """
    for name in (*_UVICORN_LOGGERS, "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = name != "uvicorn.access" or access_log


def serve(
    app: App,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    config: IngressConfig | None = None,
    graceful_timeout: int = 30,
    access_log: bool = False,
    announce_bootstrap: BootstrapAnnouncer | None = None,
    extra_routes: Sequence[tuple[BaseRoute, RouteAction]] = (),
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop cleanly (see the module docstring).

    ``announce_bootstrap``, ``extra_routes`` (the dashboard...): see :class:`IngressServer`.

    Raises:
        Exception: ``App.start()`` failed (the server never listened).
    """
    server = IngressServer(
        app,
        host=host,
        port=port,
        config=config,
        graceful_timeout=graceful_timeout,
        access_log=access_log,
        announce_bootstrap=announce_bootstrap,
        extra_routes=extra_routes,
    )
    _log.info("serving", host=host, port=port, app=repr(app))
    server.run()
