"""The hot route, ``POST /webhooks/{platform}``, as a raw ASGI handler in front of the app.

Why: profiled under B3 (``bench/b3_ingress.py``, py-spy on the server at 50 connections), a
third of the event loop's time on a webhook went to layers that do nothing for it: Starlette's
error, exception and routing middleware, the route match, the ``Request`` and its
``Headers``, the ``Response`` objects, and one ``send`` wrapper per layer (error, tracing,
metrics, exception handling) around each of the two messages of the answer. The ingress
work itself (verify, parse, normalise, commit) was the smaller part.

:class:`IngressApplication` is the Starlette app of :func:`~contexten.ingress.create_ingress_app`
with one difference: a ``POST`` to exactly ``/webhooks/<platform>`` goes straight to
:class:`WebhookFastPath`. Everything else, including any other method or path under
``/webhooks/``, takes the whole stack as before. What the stack did for a webhook, the fast
path does too, in the same way:

* the security middleware lets webhooks through untouched (the platforms sign them; no
  ``Host`` check, bearer token or throttle applies): so does this;
* ``contexten_http_requests_total{route, method, status}`` and
  ``contexten_http_request_duration_seconds{route}`` are counted as the metrics middleware
  counts them (route ``/webhooks/<platform>``), from cached label children;
* with tracing on, the request runs inside the webhook's SERVER span with its status, as
  :class:`~contexten.ingress.tracing.WebhookTracingMiddleware` does, so the stored event gets
  the span's ``traceparent``;
* an unexpected exception answers 500 (when nothing was sent yet) and propagates to the
  server, which logs it, as Starlette's error middleware does.

Every check of the webhook itself (secret configured, load shedding, body caps and deadline,
the large-body budget, signature, JSON limits, normalisation, dedup in the commit, the
per-platform commit deadline) is the ingress's one implementation, which the Starlette
route also calls: the fast path only changes how the request reaches it and how the answer
leaves. Headers are decoded once into a plain dict; constant answers are built once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from contexten.events.codec import encode_json
from contexten.ingress.config import Platform
from contexten.observability import tracing
from contexten.observability.metrics import Metrics

__all__ = ["Answer", "IngressApplication", "WebhookFastPath", "WebhookHandler"]

_JSON: Final = (b"content-type", b"application/json")
_PREFIX: Final = "/webhooks/"


@dataclass(frozen=True, slots=True)
class Answer:
    """A webhook's answer, ready to send: status, body and the headers that go with them.

    Attributes:
        status: the HTTP status.
        body: the body (JSON, or empty).
        headers: every response header (content type and length included).
    """

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def json(cls, status: int, value: object, *, retry_after: int | None = None) -> Answer:
        """A JSON answer (compact, UTF-8, as Starlette's ``JSONResponse`` writes it)."""
        body = encode_json(value)
        headers = [(b"content-length", str(len(body)).encode()), _JSON]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        return cls(status, body, tuple(headers))

    @classmethod
    def empty(cls, status: int) -> Answer:
        """An answer without a body (the webhook 401)."""
        return cls(status, b"", ((b"content-length", b"0"),))


WebhookHandler = Callable[[Platform, Mapping[str, str], Receive], Awaitable[Answer]]
"""``(platform, headers by lower-case name, ASGI receive) -> Answer``: the ingress itself."""


_INTERNAL_ERROR: Final = Answer(
    500, b"Internal Server Error", ((b"content-length", b"21"), (b"content-type", b"text/plain"))
)


class WebhookFastPath:
    """Serve ``POST /webhooks/<platform>`` with ``handler`` (see the module docstring).

    Args:
        platforms: the platforms with a webhook route.
        handler: verifies, stores and answers one delivery.
        metrics: where the HTTP request counter and duration go.
    """

    def __init__(
        self, platforms: Mapping[str, Platform], handler: WebhookHandler, metrics: Metrics
    ) -> None:
        self.paths: dict[str, Platform] = {f"{_PREFIX}{name}": p for name, p in platforms.items()}
        self.handler = handler
        self.metrics = metrics
        self._counted: dict[tuple[Platform, int], Counter] = {}
        self._timed: dict[Platform, Histogram] = {}

    def platform_of(self, scope: Scope) -> Platform | None:
        """The platform whose webhook route ``scope`` (an HTTP ``POST``) asks for, or None."""
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # as Starlette's router matches routes
            path = path[len(root) :]
        return self.paths.get(path)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, platform: Platform
    ) -> None:
        started = time.perf_counter()
        status = 500
        try:
            headers: dict[str, str] = {}
            for key, value in reversed(scope["headers"]):  # the first of repeated names wins
                headers[key.decode("latin-1")] = value.decode("latin-1")
            if tracing.tracing_enabled():
                with tracing.webhook_span(platform) as span:
                    status = await self._serve(platform, headers, receive, send)
                    if span is not None:
                        span.set_attribute("http.response.status_code", status)
            else:
                status = await self._serve(platform, headers, receive, send)
        finally:
            self._observe(platform, status, time.perf_counter() - started)

    async def _serve(
        self, platform: Platform, headers: Mapping[str, str], receive: Receive, send: Send
    ) -> int:
        try:
            answer = await self.handler(platform, headers, receive)
        except Exception:
            await _send(send, _INTERNAL_ERROR)
            raise
        await _send(send, answer)
        return answer.status

    def _observe(self, platform: Platform, status: int, seconds: float) -> None:
        counted = self._counted.get((platform, status))
        if counted is None:
            route = f"{_PREFIX}{platform}"
            counted = self.metrics.http_requests.labels(route, "POST", str(status))
            self._counted[platform, status] = counted
        counted.inc()
        timed = self._timed.get(platform)
        if timed is None:
            timed = self._timed[platform] = self.metrics.http_duration.labels(
                f"{_PREFIX}{platform}"
            )
        timed.observe(seconds)


async def _send(send: Send, answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})


class IngressApplication(Starlette):
    """The ingress's Starlette app, with webhook deliveries taken by :attr:`fast_path` first.

    Middleware added with ``add_middleware`` wraps every route but the webhooks; what the
    webhooks need of the stack the fast path does itself (see the module docstring).
    """

    fast_path: WebhookFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and scope["method"] == "POST":
            platform = fast.platform_of(scope)
            if platform is not None:
                await fast(scope, receive, send, platform)
                return
        await super().__call__(scope, receive, send)
