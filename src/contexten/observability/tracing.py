"""OpenTelemetry tracing: one trace from a webhook through handlers, workflow steps and calls.

Off by default, and free when off: every hook below first checks one module global and
returns a shared no-op. Turn it on with :func:`configure_tracing` (``App`` calls it at start
when an ``OTEL_*`` exporter is configured), which needs the ``otel`` extra
(``pip install 'contexten[otel]'``).

What is traced (span names and kinds follow the OpenTelemetry messaging and HTTP semantic
conventions):

=================================  ========  ================================================
``POST /webhooks/{platform}``      SERVER    the webhook request (ASGI middleware); its
                                             ``traceparent`` is stored on the event
``send {event type}``              PRODUCER  ``app.publish`` from code (when no span is open)
``process {subscription}``         CONSUMER  one handler attempt; parent: the event's
                                             ``traceparent`` (and linked to it)
``step {name}``                    INTERNAL  one attempt of a workflow step; parent: the
                                             trigger event's context. Replays re-run no
                                             step, so they make no spans; no span stays open
                                             across a durable sleep or wait
``{METHOD} {route template}``      CLIENT    an outbound platform call: method, route
                                             template (ids replaced), status; never bodies,
                                             query strings or tokens
=================================  ========  ================================================

Events emitted inside a span (handler emits, workflow emits, recorded actions) carry its
``traceparent``, so whatever they cause joins the same trace.

Configuration is the standard environment: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``
or ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` (read by the
SDK itself).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "attach_event_context",
    "client_span",
    "configure_tracing",
    "disable_tracing",
    "inject",
    "link_current_span",
    "process_span",
    "publish_span",
    "route_template",
    "step_span",
    "tracing_enabled",
    "webhook_span",
]

_NAME: Final = "contexten"
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_ID_SEGMENT: Final = re.compile(r"^(?=.*\d)[A-Za-z0-9_\-.:]+$")


def tracing_enabled() -> bool:
    """Whether spans are being made."""
    return _tracer is not None


def configure_tracing(provider: TracerProvider | None = None) -> bool:
    """Turn tracing on; return whether it is on.

    Args:
        provider: the SDK ``TracerProvider`` to use (tests pass one with an in-memory
            exporter). Default: one built from the ``OTEL_*`` environment, if
            ``OTEL_TRACES_EXPORTER`` or an OTLP endpoint is set; otherwise tracing stays off.

    Raises:
        ConfigurationError: tracing is asked for but the ``otel`` extra is not installed, or
            the exporter named is unknown.
    """
    global _tracer, _provider
    if provider is None:
        provider = _provider_from_env()
        if provider is None:
            return False
    try:
        from opentelemetry import trace
    except ImportError as e:  # pragma: no cover - the provider came from the SDK
        raise ConfigurationError(
            "tracing needs the otel extra: pip install 'contexten[otel]'"
        ) from e
    _provider = provider
    _tracer = trace.get_tracer(_NAME, tracer_provider=provider)
    return True


def disable_tracing() -> None:
    """Turn tracing off (the provider is flushed, not shut down: its owner does that)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.force_flush()
    _tracer = _provider = None


def _provider_from_env() -> TracerProvider | None:
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter_name in ("", "none") and not (exporter_name == "" and endpoint):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as e:
        raise ConfigurationError(
            "OTEL_TRACES_EXPORTER is set but the otel extra is not installed: "
            "pip install 'contexten[otel]'"
        ) from e
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "contexten")})
    provider = TracerProvider(resource=resource)  # reads OTEL_TRACES_SAMPLER itself
    if exporter_name in ("", "otlp"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported (otlp, console, none)"
        )
    return provider


def _context_of(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _current_traceparent() -> str | None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def inject(event: Event) -> Event:
    """``event`` with the current span's ``traceparent`` (unchanged if it has one, if no span
    is open, or if tracing is off)."""
    if _tracer is None or event.traceparent:
        return event
    traceparent = _current_traceparent()
    return event.replace(traceparent=traceparent) if traceparent else event


@contextlib.contextmanager
def _span(
    name: str,
    kind: str,
    attributes: Mapping[str, Any],
    parent: str | None = None,
    link: bool = False,
) -> Iterator[Span | None]:
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, get_current_span

    context = _context_of(parent)
    links = []
    if link and context is not None:
        remote = get_current_span(context).get_span_context()
        if remote.is_valid:
            links.append(Link(remote))
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=getattr(SpanKind, kind),
        attributes=dict(attributes),
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as e:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            span.set_attribute("error.type", type(e).__name__)
            raise


_NOOP: Final = contextlib.nullcontext(None)


def webhook_span(platform: str) -> contextlib.AbstractContextManager[Span | None]:
    """The SERVER span of one webhook request (``http.response.status_code`` set by the
    caller through the yielded span)."""
    if _tracer is None:
        return _NOOP
    return _span(
        f"POST /webhooks/{platform}",
        "SERVER",
        {"http.request.method": "POST", "http.route": f"/webhooks/{platform}"},
    )


def publish_span(event: Event) -> contextlib.AbstractContextManager[Span | None]:
    """A PRODUCER span for publishing ``event`` from code (no-op inside another span)."""
    if _tracer is None or event.traceparent:
        return _NOOP
    from opentelemetry.trace import get_current_span

    if get_current_span().get_span_context().is_valid:
        return _NOOP
    return _span(
        f"send {event.type}",
        "PRODUCER",
        {
            "messaging.system": _NAME,
            "messaging.operation.type": "send",
            "messaging.destination.name": event.type,
            "messaging.message.id": event.id,
        },
    )


def process_span(
    subscription: str, event: Event, attempt: int | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """The CONSUMER span of one handler attempt, child of (and linked to) the event's trace."""
    if _tracer is None:
        return _NOOP
    attributes: dict[str, Any] = {
        "messaging.system": _NAME,
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": subscription,
        "messaging.destination.name": event.type,
        "messaging.message.id": event.id,
    }
    if event.correlation_id:
        attributes["messaging.message.conversation_id"] = event.correlation_id
    if attempt is not None:
        attributes["contexten.attempt"] = attempt
    return _span(f"process {subscription}", "CONSUMER", attributes, event.traceparent, link=True)


def step_span(
    workflow_id: str, step: str, attempt: int, *, compensation: bool = False
) -> contextlib.AbstractContextManager[Span | None]:
    """An INTERNAL span for one attempt of a workflow step (in the instance's context)."""
    if _tracer is None:
        return _NOOP
    return _span(
        f"{'compensate' if compensation else 'step'} {step}",
        "INTERNAL",
        {
            "contexten.workflow.id": workflow_id,
            "contexten.step.name": step,
            "contexten.attempt": attempt,
        },
    )


def route_template(path: str) -> str:
    """A URL path with id-like segments (anything with a digit) replaced by ``{id}``."""
    return "/".join("{id}" if _ID_SEGMENT.match(s) else s for s in path.split("/"))


def client_span(
    platform: str, method: str, host: str, path: str
) -> contextlib.AbstractContextManager[Span | None]:
    """The CLIENT span of one outbound platform request (set ``http.response.status_code``
    on the yielded span)."""
    if _tracer is None:
        return _NOOP
    template = route_template(path)
    return _span(
        f"{method} {template}",
        "CLIENT",
        {
            "http.request.method": method,
            "url.template": template,
            "server.address": host,
            "contexten.platform": platform,
        },
    )


def link_current_span(traceparent: str, relation: str) -> None:
    """Link the current span to the span ``traceparent`` names (e.g. an echo webhook's
    delivery to the action that caused it); nothing when tracing is off or no span is open."""
    if _tracer is None:
        return
    from opentelemetry.trace import get_current_span

    span = get_current_span()
    context = _context_of(traceparent)
    if context is None or not span.get_span_context().is_valid:
        return
    remote = get_current_span(context).get_span_context()
    if remote.is_valid:
        span.add_link(remote, {"contexten.link": relation})


@contextlib.contextmanager
def attach_event_context(traceparent: str | None) -> Iterator[None]:
    """Make the context of ``traceparent`` current inside the block (no span is opened):
    a workflow instance runs its steps under its trigger event's trace this way."""
    if _tracer is None or not traceparent:
        yield
        return
    from opentelemetry import context as otel_context

    token = otel_context.attach(_context_of(traceparent) or otel_context.get_current())
    try:
        yield
    finally:
        otel_context.detach(token)
