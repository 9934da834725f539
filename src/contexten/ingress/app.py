"""The ingress ASGI application: webhooks in, events stored; health, readiness, metrics, API.

:func:`create_ingress_app` builds a Starlette app over an :class:`EventStore`. It needs
nothing else, so it can be served on its own (a store and secrets are enough) or mounted by
the :class:`~contexten.App`, which passes its store, its health check and its metrics.

A webhook request goes through, in order (each step refuses fast and stores nothing):

1. no secret configured for the platform: 401 before reading the body; too many requests
   already waiting on the store (``IngressConfig.max_pending_commits``): 429 with
   ``Retry-After`` (load shedding, checked again just before the commit);
2. a ``Content-Length`` over the platform's cap: 413, and no signature header: 401, both
   before reading the body; a large body (over
   ``IngressConfig.offload_threshold``) first waits for its share of the large-body memory
   budget (429 when none frees up within the platform's deadline); the body, read under the
   platform's cap and a deadline (413, 408);
3. the signature on the raw bytes (401, no detail), the JSON with hostile-input limits (400),
   the platform's post-signature checks (401), normalisation (400);
4. ONE ``store.commit`` of the event with its dedup key; only then 202. A duplicate answers
   200 and changes nothing. Any store failure answers 503: never a 2xx for an event that is
   not stored. So does a commit not done within the platform's deadline
   (``IngressConfig.commit_deadline``, counted from the request's start): the platform
   retries, and a commit that still lands makes that retry a duplicate.

Handlers never run inside the request: the dispatcher picks the event up from the log.

A ``POST`` to a webhook route reaches these steps through the fast path
(:mod:`contexten.ingress.fastpath`), a raw ASGI handler in front of the Starlette stack that
also counts the request's metrics and opens its span; the Starlette route runs the same steps
when the fast path is off.

Every other route sits behind :class:`~contexten.security.SecurityMiddleware`: the ``Host``
check, then a bearer token whose role allows the route's action (:data:`ROUTE_ACTIONS`).
``GET /healthz`` and a bare ``GET /readyz`` (status only) are public; ``/readyz?verbose=1``
and ``/metrics`` need ``viewer`` (``/metrics`` is public with ``metrics_public``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from contexten.bus.streams import default_stream
from contexten.events.envelope import Event
from contexten.exceptions import IngressError, Overloaded, PayloadTooLarge, SignatureInvalid
from contexten.ingress.api import EventsAPI
from contexten.ingress.body import ByteBudget, parse_length, read_received
from contexten.ingress.config import IngressConfig, Platform
from contexten.ingress.fastpath import Answer, IngressApplication, WebhookFastPath
from contexten.ingress.openapi import openapi_spec
from contexten.ingress.receivers import RECEIVERS, SIGNATURE_HEADERS, Accepted
from contexten.ingress.tracing import WebhookTracingMiddleware
from contexten.observability import tracing
from contexten.observability.logging import get_logger
from contexten.observability.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from contexten.projections.manager import Projections
from contexten.security.hosts import AllowedHosts
from contexten.security.middleware import RouteAction, SecurityMiddleware, verbose_requested
from contexten.security.throttle import FailureThrottle
from contexten.security.tokens import TokenRegistry
from contexten.store.base import Append, EventStore

__all__ = ["HealthLike", "Readiness", "create_ingress_app", "readyz_action"]

_log = get_logger("contexten.ingress")

_OUTCOMES: Final[Mapping[int, str]] = {
    401: "unauthorized",
    400: "malformed",
    408: "timeout",
    413: "too_large",
    429: "shed",
}
_ERRORS: Final[Mapping[int, str]] = {
    400: "malformed payload",
    408: "body not received in time",
    413: "payload too large",
    429: "overloaded, retry later",
}
_SIGNATURE_KEYS: Final[Mapping[Platform, str]] = {
    p: name.lower() for p, name in SIGNATURE_HEADERS.items()
}
_UNAUTHORIZED: Final = Answer.empty(401)
_DUPLICATE: Final = Answer.json(200, {"status": "duplicate"})


class HealthLike(Protocol):
    """What a readiness check returns: ``App.health()``'s report fits."""

    @property
    def ok(self) -> bool:
        """Whether the app is ready to take traffic."""

    def to_dict(self) -> dict[str, Any]:
        """The details, JSON-ready."""


Readiness = Callable[[], Awaitable[HealthLike]]
"""An async callable answering whether the app is ready (``/readyz``)."""


@dataclass(frozen=True, slots=True)
class _StoreReadiness:
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "store": {"reachable": self.ok, "error": self.error}}


class _Ingress:
    """The request handlers, bound to one store, configuration and metrics."""

    def __init__(
        self,
        store: EventStore,
        config: IngressConfig,
        metrics: Metrics,
        readiness: Readiness | None,
        stream_for: Callable[[Event], str],
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.readiness = readiness or self._store_readiness
        self.stream_for = stream_for
        self.api_paths: dict[str, Any] = {}
        self.pending_commits = 0
        """Webhook requests waiting on ``store.commit`` now (what load shedding bounds)."""
        self.large_bodies = ByteBudget(config.large_body_budget)
        """Memory for large bodies, shared by the requests reading and checking them."""
        # Looked up once, not per request: the configuration is frozen.
        self._signed = {p: bool(config.secrets(p)) for p in RECEIVERS}
        self._limits = {p: config.max_body(p) for p in RECEIVERS}
        self._deadlines = {p: config.commit_deadline(p) for p in RECEIVERS}
        # Metric children by label values (``labels()`` takes a lock and a lookup per call).
        self._outcomes: dict[tuple[Platform, str], Counter] = {}
        self._latency: dict[Platform, Histogram] = {}
        self._stored: dict[str, Counter] = {}
        # The answers that never vary, built once.
        retry = config.retry_after
        self._shed = Answer.json(
            429,
            {"error": _ERRORS[429], "detail": "too many requests wait on the store"},
            retry_after=retry,
        )
        self._too_slow = Answer.json(
            503, {"error": "store too slow, retry later"}, retry_after=retry
        )
        self._unavailable = Answer.json(503, {"error": "store unavailable"}, retry_after=retry)

    async def _store_readiness(self) -> HealthLike:
        try:
            await self.store.ping()
        except Exception as e:
            return _StoreReadiness(False, type(e).__name__)
        return _StoreReadiness(True)

    def webhook_endpoint(self, platform: Platform) -> Callable[[Request], Awaitable[Response]]:
        """The Starlette endpoint of ``platform``'s route (the fast path usually answers
        first: :mod:`contexten.ingress.fastpath`)."""

        async def endpoint(request: Request) -> Response:
            answer = await self.webhook(platform, request.headers, request.receive)
            response = Response(answer.body, answer.status)
            response.raw_headers = list(answer.headers)
            return response

        endpoint.__name__ = f"{platform}_webhook"
        return endpoint

    def _count(self, platform: Platform, outcome: str) -> None:
        counted = self._outcomes.get((platform, outcome))
        if counted is None:
            counted = self.metrics.webhooks.labels(platform, outcome)
            self._outcomes[platform, outcome] = counted
        counted.inc()

    async def webhook(
        self, platform: Platform, headers: Mapping[str, str], receive: Receive
    ) -> Answer:
        """Verify, normalise and durably store one webhook delivery (module docstring).

        Args:
            platform: whose route the request came to.
            headers: the request's headers, looked up by lower-case name.
            receive: the request's ASGI ``receive`` (the body is read from it, under the
                platform's cap and the body deadline).
        """
        started = time.perf_counter()
        try:
            accepted = await self._accept(platform, headers, receive)
        except IngressError as e:
            status = e.status_code
            self._count(platform, _OUTCOMES.get(status, "malformed"))
            _log.info("webhook refused", platform=platform, status=status, reason=str(e))
            if status == 401:
                return _UNAUTHORIZED
            retry_after = self.config.retry_after if status == 429 else None
            return Answer.json(
                status,
                {"error": _ERRORS.get(status, "bad request"), "detail": str(e)},
                retry_after=retry_after,
            )
        if accepted.reply is not None or accepted.event is None:
            self._count(platform, "answered")
            return Answer.json(200, accepted.reply or {})
        event = accepted.event
        try:
            self._admit()
        except Overloaded:
            self._count(platform, "shed")
            return self._shed
        event = tracing.inject(event)  # the webhook's span (tracing middleware or fast path)
        self.pending_commits += 1
        deadline = self._deadlines[platform] - (time.perf_counter() - started)
        try:
            async with asyncio.timeout(max(deadline, 0.0)):
                results = await self.store.commit(
                    [Append(self.stream_for(event), [event])], dedup_key=accepted.dedup_key
                )
        except TimeoutError:
            # The platform stops waiting soon: answer now so it retries. The commit may
            # still land; then the retry is a duplicate (same dedup key), never a second copy.
            self._count(platform, "late")
            _log.warning(
                "webhook not committed within the platform's deadline",
                platform=platform,
                event_type=event.type,
                delivery_id=event.delivery_id,
                deadline=self._deadlines[platform],
            )
            return self._too_slow
        except Exception as e:  # whatever broke, the event is not stored: never a 2xx
            self._count(platform, "unavailable")
            _log.error(
                "webhook not stored: store failed",
                platform=platform,
                event_type=event.type,
                delivery_id=event.delivery_id,
                error=type(e).__name__,
            )
            return self._unavailable
        finally:
            self.pending_commits -= 1
        latency = self._latency.get(platform)
        if latency is None:
            latency = self._latency[platform] = self.metrics.ingest_latency.labels(platform)
        latency.observe(time.perf_counter() - started)
        if results[0].deduplicated:
            self._count(platform, "duplicate")
            return _DUPLICATE
        self._count(platform, "stored")
        stored = self._stored.get(event.source)
        if stored is None:
            stored = self._stored[event.source] = self.metrics.events_stored.labels(event.source)
        stored.inc()
        return Answer.json(
            202, {"status": "accepted", "id": event.id, "position": results[0].last_position}
        )

    def _admit(self) -> None:
        """Shed load: refuse when the store's write path already has its fill of waiters."""
        if self.pending_commits >= self.config.max_pending_commits:
            raise Overloaded(f"{self.pending_commits} requests already wait on the store")

    async def _accept(
        self, platform: Platform, headers: Mapping[str, str], receive: Receive
    ) -> Accepted:
        config = self.config
        receiver = RECEIVERS[platform]
        if not self._signed[platform]:  # no secret configured: refuse before reading anything
            raise SignatureInvalid(f"{platform}: no secret configured")
        self._admit()  # shed before reading the body: an overloaded server does no work
        limit = self._limits[platform]
        size = parse_length(headers.get("content-length"))
        if size is not None and size > limit:
            raise PayloadTooLarge(f"body of {size} bytes announced; the limit is {limit}")
        if not headers.get(_SIGNATURE_KEYS[platform]):  # unsigned: read nothing
            raise SignatureInvalid(f"{platform}: {SIGNATURE_HEADERS[platform]} missing")
        share = limit if size is None else min(size, limit)
        if share <= config.offload_threshold:
            body = await read_received(receive, limit=limit, timeout=config.body_timeout)
            return receiver(headers, body, config)
        # A large body: held, with its parse, within the shared budget. No share before the
        # platform's deadline: 429, the platform retries.
        waiting_since = time.monotonic()
        try:
            async with asyncio.timeout(min(config.body_timeout, self._deadlines[platform])):
                share = await self.large_bodies.acquire(share)
        except TimeoutError:
            raise Overloaded("too many large bodies being read; retry later") from None
        try:
            left = config.body_timeout - (time.monotonic() - waiting_since)
            body = await read_received(receive, limit=limit, timeout=max(left, 0.001))
            return await asyncio.to_thread(receiver, headers, body, config)
        finally:
            self.large_bodies.release(share)

    async def healthz(self, request: Request) -> Response:
        """The process is alive and serving."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 when ready (store reachable, dispatcher running when an App is wired), else 503.

        The body is only the status; ``?verbose=1`` (``viewer`` and up) adds the details.
        """
        try:
            report = await self.readiness()
            ok, details = report.ok, report.to_dict()
        except Exception as e:
            ok, details = False, {"ok": False, "error": type(e).__name__}
        status: dict[str, Any] = {"status": "ready" if ok else "not ready"}
        if verbose_requested(request.scope):
            status["details"] = details
        return JSONResponse(status, 200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        """Prometheus text exposition of this app's registry (refreshed for this scrape)."""
        await self.metrics.refresh()
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 description of this app's HTTP API."""
        return JSONResponse(openapi_spec(self.api_paths))


def readyz_action(scope: Scope) -> str | None:
    """What ``/readyz`` needs: nothing for the status, ``health:read`` for the details."""
    return "health:read" if verbose_requested(scope) else None


def create_ingress_app(
    store: EventStore,
    config: IngressConfig | None = None,
    *,
    readiness: Readiness | None = None,
    metrics: Metrics | None = None,
    stream_for: Callable[[Event], str] = default_stream,
    extra_routes: Sequence[tuple[BaseRoute, RouteAction]] = (),
    manage_store: bool = False,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
    api_paths: Mapping[str, Any] | None = None,
    projections: Projections | None = None,
) -> IngressApplication:
    """Build the ingress ASGI app over ``store``.

    Args:
        store: where webhooks are committed and the events API reads from.
        config: secrets, caps and tolerances (default: :meth:`IngressConfig.from_env`).
        readiness: what ``/readyz`` asks (default: the store answers a ping). An App passes
            its ``health`` method, which also checks the dispatcher.
        metrics: the metrics to feed and serve at ``/metrics`` (default: a fresh registry).
        stream_for: the stream each webhook event is appended to (default:
            ``{source}-{subject}``, as ``App.publish`` does).
        extra_routes: more routes to serve (a dashboard...), each with the action it needs
            (:data:`~contexten.security.RouteAction`: an action name, None for public, or a
            function of the request).
        manage_store: open the store at startup and close it at shutdown (when the app is
            served on its own rather than by an App that owns the store).
        on_startup: awaited in order when the server starts, after the store is opened (an
            App passes its ``start``, so serving the ingress also runs the dispatcher).
        on_shutdown: awaited in order when the server stops, before the store is closed.
        api_paths: the OpenAPI description of ``extra_routes`` that belong in
            ``/openapi.json`` (the read-model API).
        projections: the read models with the ``events`` index the events API filters
            through (an App's); without them its filters test the log entry by entry.

    Returns:
        The Starlette application (webhook deliveries go through its fast path:
        :mod:`contexten.ingress.fastpath`); ``app.state.metrics``, ``app.state.config`` and
        ``app.state.tokens`` (the :class:`~contexten.security.TokenRegistry`) hold what it
        uses, ``app.state.route_actions`` every route with the action it needs.

    Raises:
        ConfigurationError: ``config.admin_token`` is too short.
    """
    config = config if config is not None else IngressConfig.from_env()
    metrics = metrics if metrics is not None else Metrics()
    ingress = _Ingress(store, config, metrics, readiness, stream_for)
    ingress.api_paths = dict(api_paths or {})
    api = EventsAPI(store, config, stream_for, projections)
    rules: list[tuple[BaseRoute, RouteAction]] = [
        *(
            (Route(f"/webhooks/{p}", ingress.webhook_endpoint(p), methods=["POST"]), None)
            for p in RECEIVERS
        ),
        (Route("/healthz", ingress.healthz, methods=["GET"]), None),
        (Route("/readyz", ingress.readyz, methods=["GET"]), readyz_action),
        (
            Route("/metrics", ingress.metrics_endpoint, methods=["GET"]),
            None if config.metrics_public else "metrics:read",
        ),
        (Route("/openapi.json", ingress.openapi, methods=["GET"]), "api:describe"),
        *api.routes(),
        *extra_routes,
    ]
    tokens = TokenRegistry(
        store, admin_token=config.admin_token, refresh_interval=config.token_refresh
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_store:
            await store.open()
        try:
            for hook in on_startup:
                await hook()
            try:
                yield
            finally:
                for hook in on_shutdown:
                    await hook()
        finally:
            if manage_store:
                await store.close()

    app = IngressApplication(routes=[route for route, _ in rules], lifespan=lifespan)
    app.fast_path = WebhookFastPath({p: p for p in RECEIVERS}, ingress.webhook, metrics)
    app.add_middleware(
        SecurityMiddleware,
        rules=rules,
        tokens=tokens,
        hosts=AllowedHosts(config.allowed_hosts),
        throttle=FailureThrottle(
            config.auth_failure_limit, config.auth_failure_window, clock=config.clock
        ),
        store=store,
        clock=config.clock,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(WebhookTracingMiddleware)
    app.state.metrics = metrics
    app.state.config = config
    app.state.tokens = tokens
    app.state.route_actions = tuple(rules)
    return app
