"""ASGI middleware that opens the SERVER span of each webhook request (when tracing is on).

The ingress stores the span's ``traceparent`` on the event it appends
(:func:`contexten.observability.tracing.inject`), so the handlers, workflow steps and calls
the webhook causes join its trace. With tracing off this middleware passes requests through
after one check.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contexten.observability import tracing

__all__ = ["WebhookTracingMiddleware"]

_PREFIX: Final = "/webhooks/"


class WebhookTracingMiddleware:
    """Wrap ``POST /webhooks/{platform}`` in a SERVER span with the response status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not tracing.tracing_enabled() or not path.startswith(_PREFIX):
            await self.app(scope, receive, send)
            return
        platform = path[len(_PREFIX) :].strip("/").split("/", 1)[0] or "unknown"
        with tracing.webhook_span(platform) as span:

            async def send_status(message: Message) -> None:
                if span is not None and message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_status)
