"""Structured logging: one renderer for every record, JSON lines off a terminal, no secrets.

:func:`configure_logging` sets up a process once: structlog *and* the standard library's root
logger end in the same renderer (structlog's ``ProcessorFormatter``), so Contexten's own lines
and every library's records (uvicorn's server and access logs, asyncpg, httpx, the stores and
the workflow engine, Python warnings) come out alike: one JSON object per line when stderr is
not a terminal, a readable console line when it is. Library code never configures logging on
import; ``App.run()``/``App.start()`` do it when nobody has.

What a line may carry:

- Tracebacks are a field (``exception``: each exception's type, message and frames), so a
  crash is one JSON line; never frame locals, which held DSNs, passwords and stored events.
- Fields named like payloads or credentials (``data``, ``api_token``...) are blanked
  (:func:`redact_sensitive`); credentials quoted in text (a store URL in an error message, a
  ``?token=`` in an access-log path) are redacted
  (:func:`~contexten.observability.redaction.redact_text`).
- A value from a payload cannot forge a record: JSON escapes control characters, and the
  console renderer writes them out (``\\n``, ``\\x1b``) before printing.

While a handler runs, the dispatcher puts the event it handles into a context variable
(:func:`bind_event`); the :func:`add_event_context` processor then adds ``event_id``,
``event_type`` and ``correlation_id`` to every line logged in that task, whichever logger logs
it (stdlib loggers included). The envelope's ``data`` is never attached.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from contexten.events.envelope import Event
from contexten.observability.redaction import (
    REDACTED,
    escape_control,
    is_sensitive_field,
    redact_text,
)

__all__ = [
    "REDACTED",
    "add_event_context",
    "add_logger_name",
    "bind_event",
    "configure_logging",
    "event_context",
    "event_fields",
    "get_logger",
    "redact_sensitive",
    "rendering_processors",
    "reset_event",
    "reset_logging",
    "shared_processors",
]

_current_event: ContextVar[Event | None] = ContextVar("contexten_current_event", default=None)


def event_fields(event: Event) -> dict[str, Any]:
    """The envelope fields a log line about ``event`` carries (never its data)."""
    return {
        "event_id": event.id,
        "event_type": event.type,
        "correlation_id": event.correlation_id,
    }


def bind_event(event: Event) -> Token[Event | None]:
    """Make ``event`` the current task's log context; undo with :func:`reset_event`."""
    return _current_event.set(event)


def reset_event(token: Token[Event | None]) -> None:
    """Restore the log context that was current before :func:`bind_event`."""
    _current_event.reset(token)


@contextmanager
def event_context(event: Event) -> Iterator[None]:
    """Log lines emitted inside this block carry ``event``'s id, type and correlation id."""
    token = _current_event.set(event)
    try:
        yield
    finally:
        _current_event.reset(token)


def add_event_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: add the current event's id, type and correlation id."""
    event = _current_event.get()
    if event is not None:
        event_dict.setdefault("event_id", event.id)
        event_dict.setdefault("event_type", event.type)
        if event.correlation_id is not None:
            event_dict.setdefault("correlation_id", event.correlation_id)
    return event_dict


def add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: add the logger's name (a stdlib record's, for foreign records)."""
    record = event_dict.get("_record")
    name = record.name if isinstance(record, logging.LogRecord) else getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def redact_sensitive(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: blank fields named like payloads (``data``) or secrets (``token``)."""
    for key in [k for k in event_dict if k != "event" and is_sensitive_field(str(k))]:
        event_dict[key] = REDACTED
    return event_dict


def shared_processors() -> list[Processor]:
    """The processors every log line goes through before rendering, whoever logged it.

    They run on Contexten's structlog lines and on other libraries' stdlib records alike
    (uvicorn, asyncpg, httpx, the workflow engine...), so both carry the same fields.
    """
    return [
        structlog.contextvars.merge_contextvars,
        add_event_context,
        add_logger_name,
        redact_sensitive,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


_exception_dicts: Final = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)
"""``exc_info`` to an ``exception`` field: each exception's type, message, notes and frames
(file, line, function). Never frame locals: they held DSNs, passwords and stored events."""


def _clean(value: Any, escape: bool) -> Any:
    if isinstance(value, str):
        value = redact_text(value)
        return escape_control(value) if escape else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {_clean(str(k), escape): _clean(v, escape) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, escape) for v in value]
    return _clean(str(value), escape)  # an object's str may quote anything: clean it too


def _make_clean(*, escape: bool) -> Processor:
    def clean(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Every value JSON-ready, credentials in text redacted, controls escaped if asked."""
        return {_clean(str(k), escape): _clean(v, escape) for k, v in event_dict.items()}

    return clean


def _console_traceback(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Turn the (cleaned) ``exception`` dicts into a plain traceback for the console.

    Every message in it was escaped already, so the traceback's own lines are the only line
    breaks: a message cannot add a line that looks like a log record.
    """
    stacks = event_dict.get("exception")
    if not isinstance(stacks, list):
        return event_dict
    chunks: list[str] = []
    caused = False  # whether the exception printed last caused the next one (or was its context)
    for stack in reversed(stacks):  # innermost first, as Python prints them
        if not isinstance(stack, dict):
            continue
        if chunks:
            chunks.append(
                "\nThe above exception was the direct cause of the following exception:\n"
                if caused
                else "\nDuring handling of the above exception, another exception occurred:\n"
            )
        chunks.append("Traceback (most recent call last):")
        chunks.extend(
            f'  File "{frame.get("filename")}", line {frame.get("lineno")}, in {frame.get("name")}'
            for frame in stack.get("frames") or []
        )
        chunks.append(f"{stack.get('exc_type')}: {stack.get('exc_value')}")
        chunks.extend(f"  note: {note}" for note in stack.get("exc_notes") or [])
        caused = bool(stack.get("is_cause"))
    event_dict["exception"] = "\n".join(chunks)
    return event_dict


def rendering_processors(*, json: bool, colors: bool = False) -> list[Processor]:
    """The processors that finish and render a line: the one renderer of the process.

    JSON: one object per line; the traceback is the ``exception`` field (structured, no
    frame locals); control characters are escaped by the JSON encoder (``\\u001b``).
    Console: a readable line, control characters in every value escaped (``\\x1b``), then
    the traceback (no locals) below it. Both redact credentials quoted in text.
    """
    if json:
        return [_exception_dicts, _make_clean(escape=False), structlog.processors.JSONRenderer()]
    return [
        _exception_dicts,
        _make_clean(escape=True),
        _console_traceback,
        structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        ),
    ]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: every stdlib record, Contexten's own lines included, goes here.

    Writes to the stream it was given, or to whatever ``sys.stderr`` is at each write (a test
    runner or a daemoniser may swap it after logging was configured).
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        if self._fixed is None:
            self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    *, json: bool | None = None, level: int | str = "INFO", stream: TextIO | None = None
) -> None:
    """Send every log record of the process through one renderer (see the module docstring).

    Configures structlog and the standard library's root logger together: Contexten's
    structlog lines and every library's stdlib records (uvicorn, asyncpg, httpx, the stores
    and the workflow engine) become one JSON object per line, or one console line. Python
    warnings are logged too. Calling it again replaces the previous configuration.

    Args:
        json: JSON lines if True, console lines if False; None picks JSON unless the output
            stream is a terminal.
        level: the lowest level logged (a name like ``"DEBUG"`` or a ``logging`` constant).
        stream: where lines go (default: ``sys.stderr``, looked up at each write).
    """
    out = stream or sys.stderr
    terminal = hasattr(out, "isatty") and out.isatty()
    if json is None:
        json = not terminal
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors(),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *rendering_processors(json=json, colors=terminal),
            ],
        )
    )
    reset_logging()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(numeric)
    # httpx logs every request at INFO (our actions are events already): only when debugging.
    # httpcore's DEBUG is a trace of socket calls: never below WARNING.
    logging.getLogger("httpx").setLevel(
        numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    )
    logging.getLogger("httpcore").setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        context_class=dict,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo :func:`configure_logging`: structlog's defaults, the root handler removed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
        handler.close()
    logging.captureWarnings(False)
    structlog.reset_defaults()


def get_logger(name: str = "contexten", **initial: Any) -> Any:
    """A structlog logger named ``name`` with ``initial`` fields bound.

    The logger is lazy: it follows the configuration current when it logs, so loggers made
    before :func:`configure_logging` (at import or construction time) still obey it.
    """
    return structlog.get_logger(name, **initial)
