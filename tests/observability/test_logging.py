"""Structured logs: JSON lines off a terminal, event context on every line, no payloads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import warnings
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
from contexten.resilience.supervisor import Supervisor
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


# -- one renderer for every record -----------------------------------------------------------

PASSWORD = "Canary-pg-pw-5Rt"
DSN = f"postgresql://app:{PASSWORD}@db.internal:5432/contexten"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
FORGED = '\n{"event": "forged", "level": "info"}\r\x1b[2J\x1b]0;pwned\x07[bold red]x[/]'


@pytest.fixture
def _access_log_on() -> Iterator[None]:
    """uvicorn's access logger as ``IngressServer(access_log=True)`` leaves it, then back."""
    access = logging.getLogger("uvicorn.access")
    saved = (access.propagate, access.handlers, access.level)
    access.propagate, access.handlers = True, []
    access.setLevel(logging.NOTSET)
    yield
    access.propagate, access.handlers = saved[:2]
    access.setLevel(saved[2])


@pytest.mark.usefixtures("_access_log_on")
def test_stdlib_records_of_every_library_are_json_lines_with_the_same_fields() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    event = Event(type="github.push", correlation_id="LIN-3")
    with event_context(event):
        logging.getLogger("contexten.workflows").warning("engine says %s", "hello")
        logging.getLogger("asyncpg.pool").warning("connection lost")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:1")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/login?token={SECRET}", "1.1", 200
    )
    logging.getLogger("httpx").warning("HTTP Request: GET %s", f"{DSN}/x")
    logging.getLogger("httpx").info("below httpx's floor: not logged")
    structlog.get_logger("contexten.test").info("structlog line")
    lines = _lines(out)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("contexten.workflows", "warning"),
        ("asyncpg.pool", "warning"),
        ("uvicorn.error", "info"),
        ("uvicorn.access", "info"),
        ("httpx", "warning"),
        ("contexten.test", "info"),
    ]
    assert lines[0]["event"] == "engine says hello"
    assert (lines[0]["event_id"], lines[1]["correlation_id"]) == (event.id, "LIN-3")
    assert all("timestamp" in line for line in lines)
    assert "token=***" in lines[3]["event"]
    assert SECRET not in out.getvalue()
    assert PASSWORD not in out.getvalue()


def _crash() -> None:
    dsn = DSN  # locals a traceback must never show
    stored = {"token": SECRET, "dsn": dsn}
    try:
        raise ConnectionError(f"lost {len(stored)} connections to {dsn}")
    except ConnectionError as e:
        raise RuntimeError("task crashed" + FORGED) from e


def test_tracebacks_are_one_json_field_without_frame_locals() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        _crash()
    except RuntimeError as e:
        structlog.get_logger("contexten.supervisor").error("supervised task crashed", exc_info=e)
        logging.getLogger("asyncpg").exception("stdlib crash")
    text = out.getvalue()
    assert len(text.splitlines()) == 2
    for line in _lines(out):
        outer, cause = line["exception"]
        assert (outer["exc_type"], cause["exc_type"]) == ("RuntimeError", "ConnectionError")
        assert outer["exc_value"] == "task crashed" + FORGED  # intact, JSON-escaped on the line
        assert (
            cause["exc_value"]
            == "lost 2 connections to postgresql://app:***@db.internal:5432/contexten"
        )
        assert any(frame["name"] == "_crash" for frame in outer["frames"])
        assert all(set(frame) == {"filename", "lineno", "name"} for frame in outer["frames"])
    assert SECRET not in text
    assert PASSWORD not in text
    assert "\x1b" not in text
    assert "\r" not in text


def test_a_value_cannot_forge_a_json_record() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = structlog.get_logger("contexten.test")
    log.info("subject " + FORGED, subject=FORGED, ids=[FORGED], nested={"k\nx": FORGED})
    logging.getLogger("contexten.store").warning("stdlib %s", FORGED)
    [first, second] = _lines(out)
    assert first["event"] == "subject " + FORGED
    assert (first["subject"], first["ids"], first["nested"]) == (FORGED, [FORGED], {"k\nx": FORGED})
    assert second["event"] == "stdlib " + FORGED
    assert "\x1b" not in out.getvalue()
    assert "\r" not in out.getvalue()


def test_a_value_cannot_forge_a_console_record() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    log = structlog.get_logger("contexten.test")
    log.info("subject " + FORGED, subject=FORGED)
    logging.getLogger("contexten.store").warning("stdlib %s", FORGED)
    try:
        _crash()
    except RuntimeError as e:
        log.error("crashed", exc_info=e)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\r" not in text
    assert "\x07" not in text
    records = [line for line in text.splitlines() if TIMESTAMP.match(line)]
    assert len(records) == 3
    assert "\\x1b[2J" in records[0]
    assert '\\n{"event": "forged"' in records[0]
    assert "[bold red]x[/]" in records[0]  # printed as is: this renderer is not rich markup
    tail = text.split(records[2], 1)[1].splitlines()[1:]  # the traceback under the last record
    assert tail[0] == "Traceback (most recent call last):"
    assert any(line.startswith("RuntimeError: task crashed\\n") for line in tail)
    assert "The above exception was the direct cause" in text
    assert SECRET not in text
    assert PASSWORD not in text


def test_python_warnings_are_logged_too() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # catch_warnings swapped showwarning back; redo it
        warnings.warn("careful\nnow", RuntimeWarning, stacklevel=1)
    [line] = _lines(out)
    assert (line["logger"], line["level"]) == ("py.warnings", "warning")
    assert "RuntimeWarning: careful\nnow" in line["event"]


def test_reconfiguring_replaces_the_handler_and_reset_removes_it() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second)
    logging.getLogger("contexten.test").warning("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]
    reset_logging()
    assert not structlog.is_configured()
    logging.getLogger("contexten.test").error("after reset")
    assert len(_lines(second)) == 1


async def test_a_crashing_supervised_task_logs_no_locals() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    supervisor = Supervisor(backoff=RetryPolicy(initial_interval=0.01, maximum_interval=0.01))
    crashed = asyncio.Event()

    async def loop() -> None:
        dsn = DSN
        stored_event = Event(type="github.push", data={"token": SECRET})
        crashed.set()
        raise ConnectionResetError(f"{stored_event.type} via {dsn.partition('@')[2]}")

    supervisor.start("reader", loop)
    async with asyncio.timeout(HANG_GUARD):
        await crashed.wait()
        while not out.getvalue():  # noqa: ASYNC110 - the log line follows the crash
            await asyncio.sleep(0.01)
    await supervisor.stop()
    line = _lines(out)[0]
    assert line["event"] == "supervised task crashed; restarting"
    assert line["exception"][0]["exc_type"] == "ConnectionResetError"
    assert SECRET not in out.getvalue()
    assert PASSWORD not in out.getvalue()
