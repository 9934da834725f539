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
import functools
import os
import re
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanContext, Tracer

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
# W3C trace context: what TraceContextTextMapPropagator accepts (its pattern and limit), so
# what it would refuse we refuse too (a test compares the two).
_TRACEPARENT: Final = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_TRACEPARENT_MAX_LENGTH: Final = 512


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
    global _tracer, _provider, _api
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
    _api = _Api()
    _remote.cache_clear()
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


class _Api:
    """The OpenTelemetry names the hooks use, imported once when tracing is turned on (an
    import statement per span is a ``sys.modules`` look-up and a from-list walk each time)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.context import Context

        self.attach = context.attach
        self.detach = context.detach
        self.empty_context = Context
        self.get_current_span = trace.get_current_span
        self.set_span_in_context = trace.set_span_in_context
        self.span_context = trace.SpanContext
        self.non_recording_span = trace.NonRecordingSpan
        self.trace_flags = trace.TraceFlags
        self.link = trace.Link
        self.kinds = {kind.name: kind for kind in trace.SpanKind}
        self.status = trace.Status
        self.error = trace.StatusCode.ERROR


_api: _Api | None = None


@functools.lru_cache(maxsize=4096)
def _remote(traceparent: str) -> tuple[SpanContext, Context] | None:
    """The remote span context ``traceparent`` names and a context holding only it, as the
    W3C propagator extracts them (same validation; ``tracestate`` is not stored on events).

    Cached: an event's ``traceparent`` is read by each subscription's delivery and by its
    workflow's segments, and both results are immutable."""
    api = _api
    if api is None or len(traceparent) > _TRACEPARENT_MAX_LENGTH:
        return None
    match = _TRACEPARENT.search(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff":
        return None
    if version == "00" and rest:
        return None
    remote = api.span_context(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=api.trace_flags(int(flags, 16)),
    )
    return remote, api.set_span_in_context(api.non_recording_span(remote), api.empty_context())


def _current_traceparent() -> str | None:
    api = _api
    if api is None:
        return None
    current = api.get_current_span().get_span_context()
    if not current.is_valid:
        return None
    # What TraceContextTextMapPropagator.inject writes, without a carrier dict per event.
    return f"00-{current.trace_id:032x}-{current.span_id:016x}-{current.trace_flags:02x}"


def inject(event: Event) -> Event:
    """``event`` with the current span's ``traceparent`` (unchanged if it has one, if no span
    is open, or if tracing is off)."""
    if _tracer is None or event.traceparent:
        return event
    traceparent = _current_traceparent()
    return event.replace(traceparent=traceparent) if traceparent else event


class _Scope:
    """One span made current for a block and ended after it.

    What ``Tracer.start_as_current_span`` does (start, attach, detach, end; an error
    status and ``error.type`` when the block raises), as one small object instead of three
    nested generator context managers per span.
    """

    __slots__ = ("_attributes", "_kind", "_link", "_name", "_parent", "_span", "_token")

    def __init__(
        self,
        name: str,
        kind: str,
        attributes: dict[str, Any],
        parent: str | None = None,
        link: bool = False,
    ) -> None:
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._parent = parent
        self._link = link
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> Span | None:
        tracer, api = _tracer, _api
        if tracer is None or api is None:
            return None
        context = None
        links = None
        if self._parent:
            remote = _remote(self._parent)
            if remote is not None:
                context = remote[1]
                if self._link:
                    links = (api.link(remote[0]),)
        span = tracer.start_span(
            self._name,
            context=context,
            kind=api.kinds[self._kind],
            attributes=self._attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = api.attach(api.set_span_in_context(span))
        return span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span, api = self._span, _api
        if span is None or api is None:
            return
        try:
            if kind is not None and span.is_recording():
                span.set_status(api.status(api.error, kind.__name__))
                span.set_attribute("error.type", kind.__name__)
        finally:
            api.detach(self._token)  # type: ignore[arg-type]
            span.end()


def _span(
    name: str,
    kind: str,
    attributes: dict[str, Any],
    parent: str | None = None,
    link: bool = False,
) -> contextlib.AbstractContextManager[Span | None]:
    return _Scope(name, kind, attributes, parent, link)


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
    api = _api
    if _tracer is None or api is None or event.traceparent:
        return _NOOP
    if api.get_current_span().get_span_context().is_valid:
        return _NOOP
    return _span(
        f"send {event.type}",
        "PRODUCER",
        {
            "messaging.system": _NAME,
            "messaging.operation.name": "send",
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
        "messaging.operation.name": "process",
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
    api = _api
    if _tracer is None or api is None:
        return
    span = api.get_current_span()
    remote = _remote(traceparent) if traceparent else None
    if remote is None or not span.get_span_context().is_valid:
        return
    span.add_link(remote[0], {"contexten.link": relation})


@contextlib.contextmanager
def attach_event_context(traceparent: str | None) -> Iterator[None]:
    """Make the context of ``traceparent`` current inside the block (no span is opened):
    a workflow instance runs its steps under its trigger event's trace this way."""
    api = _api
    remote = _remote(traceparent) if traceparent and _tracer is not None else None
    if remote is None or api is None:
        yield
        return
    token = api.attach(remote[1])
    try:
        yield
    finally:
        api.detach(token)
