"""OpenTelemetry spans: a webhook's trace through handler, workflow step and platform call.

The SDK's in-memory exporter collects the spans; the sandbox plays Linear, and its webhooks
reach the App through the real ingress (signed, verified, stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contexten import App, Event, HandlerContext, Workflow
from contexten.clock import WallClock
from contexten.events.envelope import Event as Envelope
from contexten.exceptions import ConfigurationError
from contexten.ingress import IngressConfig, create_ingress_app
from contexten.ingress.config import ENV_SECRETS
from contexten.integrations import linear
from contexten.integrations.echo import BotIdentity
from contexten.observability import tracing
from contexten.resilience import RetryPolicy
from contexten.store.memory import MemoryEventStore
from contexten.testing.sandbox import Sandbox

HANG_GUARD = 30.0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.configure_tracing(provider)
    try:
        yield exporter
    finally:
        tracing.disable_tracing()
        provider.shutdown()


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_webhook_to_handler_step_and_platform_call(
    spans: InMemorySpanExporter,
) -> None:
    sandbox = Sandbox()
    app = App("memory://", clock=WallClock())
    app.use_agents(
        sandbox.clients(retry=RetryPolicy.no_retries()),
        bot=BotIdentity(linear_user_ids=frozenset({sandbox.linear.bot["id"]})),
    )
    handled: list[str | None] = []

    @app.on("linear.issue.updated", name="note")
    async def note(event: Event, ctx: HandlerContext) -> None:
        handled.append(event.traceparent)

    @app.workflow("claim", on="linear.issue.updated", where=linear.label_added("agent"))
    async def claim(wf: Workflow, event: Event) -> str:
        moved = await wf.step(linear.move_issue, event.data["data"]["id"], state="In Progress")
        return str(moved["state"]["name"])

    env = {variable: sandbox.config.secrets[p] for p, variable in ENV_SECRETS.items()}
    async with app:
        ingress = create_ingress_app(app.store, IngressConfig.from_env(env))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingress), base_url="http://ingress"
        ) as client:
            issue = sandbox.linear.create_issue("Add login")
            sandbox.linear.update_issue(
                issue["id"],
                {"addedLabelIds": [sandbox.linear.label_named("agent")["id"]]},
                actor=sandbox.linear.human,
            )
            for delivery in list(sandbox.outbox):
                response = await client.post(
                    f"/webhooks/{delivery.platform}",
                    content=delivery.body,
                    headers=delivery.headers,
                )
                assert response.status_code == 202
            records = await app.store.read_all(limit=1000)
            [trigger] = [r.event for r in records if r.event.type == "linear.issue.updated"]
            handle = app.workflows.get_handle(f"claim:{trigger.id}")
            assert await handle.result(timeout=HANG_GUARD) == "In Progress"
            await app.drain(HANG_GUARD)
            # The issue move comes back as a webhook: the echo of our own action.
            sent = len(sandbox.outbox)
            delivered = 2
            assert sent > delivered
            for delivery in sandbox.outbox[delivered:]:
                response = await client.post(
                    f"/webhooks/{delivery.platform}",
                    content=delivery.body,
                    headers=delivery.headers,
                )
                assert response.status_code == 202
            await app.drain(HANG_GUARD)
        records = await app.store.read_all(limit=1000)
    finished = spans.get_finished_spans()
    assert trigger.traceparent is not None
    assert trigger.traceparent == handled[0]
    # The stored event carries its webhook's span context.
    [server] = [
        s
        for s in finished
        if s.name == "POST /webhooks/linear" and f"{s.context.span_id:016x}" in trigger.traceparent
    ]
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 202
    trace_id = server.context.trace_id
    consumer = _one(finished, "process note")
    assert consumer.kind is SpanKind.CONSUMER
    assert (consumer.context.trace_id, _parent_id(consumer)) == (trace_id, server.context.span_id)
    assert [link.context.span_id for link in consumer.links] == [server.context.span_id]
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.message.id"] == trigger.id
    assert consumer.attributes["messaging.operation.name"] == "process"  # required (semconv)
    step = _one(finished, "step move_issue")
    assert (step.context.trace_id, _parent_id(step)) == (trace_id, server.context.span_id)
    calls = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert calls
    for call in calls:
        assert call.name == "POST /linear/graphql"
        assert (call.context.trace_id, _parent_id(call)) == (trace_id, step.context.span_id)
        assert call.attributes is not None
        assert call.attributes["http.response.status_code"] == 200
        assert "authorization" not in str(call.attributes).lower()
    # The recorded action joins the trace too, and the echo webhook it caused (a trace of its
    # own) is linked back to it.
    [action] = [r.event for r in records if r.event.type == "contexten.action.linear.move_issue"]
    assert action.traceparent is not None
    assert f"{trace_id:032x}" in action.traceparent
    echoes = [s for s in finished if s.name == "process contexten.echoes"]
    linked = [
        link
        for span in echoes
        for link in span.links
        if link.attributes and link.attributes.get("contexten.link") == "contexten.echo_of"
    ]
    assert [link.context.trace_id for link in linked] == [trace_id]


async def test_replayed_steps_make_no_spans(spans: InMemorySpanExporter) -> None:
    ran: list[str] = []

    async def work(label: str) -> str:
        ran.append(label)
        return label

    def build(store: MemoryEventStore) -> App:
        app = App(store, clock=WallClock())

        @app.workflow("two-steps")
        async def two_steps(wf: Workflow, n: int) -> list[str]:
            first = await wf.step(work, "a")
            await wf.sleep(timedelta(seconds=0.3))
            second = await wf.step(work, "b")
            return [first, second]

        return app

    store = MemoryEventStore()
    async with store:
        first = build(store)
        async with first:
            await first.publish(Event(type="trace.test.started", source="tests"))
            handle = await first.start_workflow("two-steps", 1, "wf-1")
            async with asyncio.timeout(HANG_GUARD):
                for _ in range(1_000_000):
                    if str((await first.get_workflow("wf-1")).status) == "sleeping":
                        break
                    await asyncio.sleep(0.01)
        second = build(store)
        async with second:
            handle = second.workflows.get_handle("wf-1")
            assert await handle.result(timeout=HANG_GUARD) == ["a", "b"]
    assert ran == ["a", "b"]
    names = [s.name for s in spans.get_finished_spans()]
    steps = [n for n in names if n.startswith("step ") and n.endswith(".work")]
    assert len(steps) == 2  # one per execution: "a" once, "b" once; the replay made none


async def test_publish_from_code_starts_a_producer_span(spans: InMemorySpanExporter) -> None:
    async with App("memory://") as app:
        await app.publish(Event(type="deploy.finished", source="ci"))
        [record] = await app.store.read_all()
    producer = _one(spans.get_finished_spans(), "send deploy.finished")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.attributes is not None
    assert producer.attributes["messaging.operation.name"] == "send"  # required (semconv)
    assert producer.attributes["messaging.system"] == "contexten"
    assert record.event.traceparent is not None
    assert f"{producer.context.span_id:016x}" in record.event.traceparent


def test_tracing_is_off_and_free_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing.configure_tracing()
    assert not tracing.tracing_enabled()
    event = Envelope(type="x.y", source="t")
    assert tracing.inject(event) is event
    assert tracing.process_span("s", event) is tracing.step_span("w", "s", 1)  # one no-op


def test_unknown_exporter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-over-carrier-pigeon")
    with pytest.raises(ConfigurationError, match="not supported"):
        tracing.configure_tracing()
    assert not tracing.tracing_enabled()


def test_route_templates_hide_ids() -> None:
    assert tracing.route_template("/repos/acme/api/issues/12/comments") == (
        "/repos/acme/api/issues/{id}/comments"
    )
    assert tracing.route_template("/graphql") == "/graphql"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-future",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 has no tail
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        " \t00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\t ",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-" + "x" * 500,  # too long
        "not a traceparent",
    ],
)
def test_event_traceparents_are_read_as_the_w3c_propagator_reads_them(
    spans: InMemorySpanExporter, traceparent: str
) -> None:
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    expected = get_current_span(propagator.extract({"traceparent": traceparent}))
    expected_context = expected.get_span_context()
    event = Envelope(type="x.y", source="t", traceparent=traceparent)
    with tracing.process_span("s", event, 1) as span:
        assert span is not None
        written = tracing.inject(Envelope(type="x.z", source="t"))
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        assert written.traceparent == carrier["traceparent"]
    if expected_context.is_valid and not expected_context.trace_flags.sampled:
        assert not span.is_recording()  # the parent-based sampler follows the event's flag
        assert spans.get_finished_spans() == ()
        return
    [consumer] = spans.get_finished_spans()
    if expected_context.is_valid:
        assert consumer.parent == expected_context
        assert consumer.context.trace_id == expected_context.trace_id
        assert [link.context for link in consumer.links] == [expected_context]
    else:
        assert consumer.parent is None
        assert list(consumer.links) == []
    assert not get_current_span().get_span_context().is_valid  # the context was restored


def test_a_failing_block_ends_its_span_with_an_error(spans: InMemorySpanExporter) -> None:
    from opentelemetry.trace import StatusCode, get_current_span

    with pytest.raises(ValueError, match="boom"), tracing.step_span("wf-1", "work", 2):
        raise ValueError("boom")
    [step] = spans.get_finished_spans()
    assert step.status.status_code is StatusCode.ERROR
    assert step.status.description == "ValueError"
    assert step.attributes is not None
    assert step.attributes["error.type"] == "ValueError"
    assert step.attributes["contexten.attempt"] == 2
    assert not get_current_span().get_span_context().is_valid
