"""Prometheus metrics, in a registry of their own, and the ASGI middleware that feeds them.

Each :class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry`, so two apps in one
process (or one test after another) never share counters, and ``/metrics`` serves exactly the
app's own metrics. Other parts (the dispatcher, the dead-letter queue) register their own
metrics or collectors on :attr:`Metrics.registry`; a collector whose values need I/O (a store
query) registers an async :meth:`Metrics.on_scrape` hook that ``/metrics`` awaits before it
renders, since Prometheus collectors themselves are synchronous.

Labels carry route templates (``/api/v1/events/{id}``), platforms and outcomes: never paths
with ids, header values, signatures or secrets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contexten.observability.logging import get_logger

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`Metrics.render`'s output (Prometheus text format)."""

_log = get_logger("contexten.metrics")

_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Metrics:
    """The process's metrics: HTTP requests, webhook ingest latency and outcomes, events stored.

    Attributes:
        registry: where every metric of this app is registered (serve it at ``/metrics``).
        http_requests: ``contexten_http_requests_total{route, method, status}``.
        http_duration: ``contexten_http_request_duration_seconds{route}``.
        ingest_latency: ``contexten_ingest_latency_seconds{platform}``: from the first body
            byte to the durable commit, for webhooks that were stored or deduplicated.
        webhooks: ``contexten_webhooks_total{platform, outcome}``: ``stored``, ``duplicate``,
            ``unauthorized``, ``too_large``, ``malformed``, ``timeout``, ``unavailable``,
            ``late`` (not committed within the platform's deadline: 503), ``answered``
            (Slack's url_verification).
        events_stored: ``contexten_events_stored_total{source}``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_requests = Counter(
            "contexten_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "contexten_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ingest_latency = Histogram(
            "contexten_ingest_latency_seconds",
            "Webhook ingest latency: body read, verified, parsed and durably committed.",
            ["platform"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "contexten_webhooks",
            "Webhook requests by platform and outcome.",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.events_stored = Counter(
            "contexten_events_stored",
            "Events committed to the store by the ingress, by source.",
            ["source"],
            registry=self.registry,
        )
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Await ``refresh()`` before each scrape (:meth:`refresh`), so collectors that read
        the store or the app's health can fetch their values asynchronously first."""
        self._refreshers.append(refresh)

    async def refresh(self) -> None:
        """Run every :meth:`on_scrape` hook; one that fails is logged and the scrape goes on
        (with that collector's previous values) rather than failing the whole scrape."""
        for refresh in self._refreshers:
            try:
                await refresh()
            except Exception as e:
                _log.warning("metrics refresh failed", error=f"{type(e).__name__}: {e}")

    def render(self) -> bytes:
        """Every metric of :attr:`registry` in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware counting HTTP requests by route template, method and status.

    The route template comes from Starlette's router (``scope["route"]``), so
    ``/api/v1/events/0190...`` counts as ``/api/v1/events/{id}``; unmatched paths count as
    ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled children by label values: ``labels()`` costs ~1 us a call (a lock and a
        # dict lookup on the metric); two per request add up on the webhook path.
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            counted = self._counted.get((route, method, status))
            if counted is None:
                counted = self.metrics.http_requests.labels(route, method, str(status))
                self._counted[route, method, status] = counted
            counted.inc()
            timed = self._timed.get(route)
            if timed is None:
                timed = self._timed[route] = self.metrics.http_duration.labels(route)
            timed.observe(time.perf_counter() - started)
