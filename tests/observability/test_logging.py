"""Structured logs: JSON lines off a terminal, event context on every line, no payloads."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from contexten import Event, HandlerContext, RetryPolicy
from contexten.observability.logging import (
    REDACTED,
    bind_event,
    configure_logging,
    event_context,
    reset_event,
    reset_logging,
)
from contexten.testing import TestApp

HANG_GUARD = 30.0
SECRET = "s3cr3t-payload-value"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    reset_logging()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_with_event_context_and_redaction() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = structlog.get_logger("test")
    event = Event(type="github.push", source="github", correlation_id="LIN-1", data={"x": 1})
    with event_context(event):
        log.info("working", data={"x": SECRET}, api_token=SECRET, count=3)
    log.info("outside")
    inside, outside = _lines(out)
    assert inside["event"] == "working"
    assert inside["level"] == "info"
    assert "timestamp" in inside
    assert (inside["event_id"], inside["event_type"], inside["correlation_id"]) == (
        event.id,
        "github.push",
        "LIN-1",
    )
    assert inside["data"] == REDACTED
    assert inside["api_token"] == REDACTED
    assert inside["count"] == 3
    assert inside["logger"] == "test"
    assert "event_id" not in outside
    assert SECRET not in out.getvalue()


def test_json_unless_on_a_terminal() -> None:
    piped = io.StringIO()
    configure_logging(stream=piped)
    structlog.get_logger().info("hello")
    assert json.loads(piped.getvalue())["event"] == "hello"

    terminal = _Terminal()
    configure_logging(stream=terminal)
    structlog.get_logger().info("hello")
    assert "hello" in terminal.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(terminal.getvalue())


def test_level_filter() -> None:
    out = io.StringIO()
    configure_logging(json=True, level="WARNING", stream=out)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    assert [line["event"] for line in _lines(out)] == ["loud"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="CHATTY")


def test_bind_and_reset_nest() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    outer, inner = Event(type="a.b"), Event(type="c.d")
    token = bind_event(outer)
    with event_context(inner):
        structlog.get_logger().info("inner")
    structlog.get_logger().info("outer")
    reset_event(token)
    assert [line["event_type"] for line in _lines(out)] == ["c.d", "a.b"]


async def test_handler_logs_carry_the_event_and_never_its_payload() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    app = TestApp(capture=False)

    @app.on("test.secret", retry=RetryPolicy(maximum_attempts=2, initial_interval=0), name="h")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        structlog.get_logger("user").info("plain logger")
        ctx.logger.info("context logger")
        raise ValueError(f"cannot use {event.data['token']}")

    event = Event(type="test.secret", correlation_id="LIN-9", data={"token": SECRET})
    async with app:
        await app.publish(event)
        await app.drain(timeout=HANG_GUARD)
    lines = _lines(out)
    mine = [line for line in lines if line.get("event_id") == event.id]
    assert {line["event"] for line in mine} >= {
        "plain logger",
        "context logger",
        "handler failed; will retry",
        "handler failed; event parked in the dead-letter queue",
    }
    for line in mine:
        assert (line["event_type"], line["correlation_id"]) == ("test.secret", "LIN-9")
    parked = next(line for line in mine if line["event"].startswith("handler failed; event"))
    assert (parked["error_type"], parked["subscription"], parked["attempts"]) == (
        "ValueError",
        "h",
        2,
    )
    assert SECRET not in out.getvalue()


async def test_dispatcher_log_entries_bind_the_event_fields() -> None:
    app = TestApp(capture=False)

    @app.on("test.failed", retry=RetryPolicy.no_retries(), name="f")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        raise RuntimeError(SECRET)

    event = Event(type="test.failed", data={"password": SECRET})
    with capture_logs() as logs:
        async with app:
            await app.publish(event)
            await app.drain(timeout=HANG_GUARD)
    [parked] = [e for e in logs if e["event"].startswith("handler failed; event parked")]
    assert parked["event_id"] == event.id
    assert parked["log_level"] == "error"
    assert SECRET not in repr([e for e in logs if e["log_level"] != "debug"])
