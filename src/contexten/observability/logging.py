"""Structured logging: JSON lines off a terminal, readable lines on one, event context always.

Contexten logs through structlog. :func:`configure_logging` sets it up once for a process:
JSON lines (one object per line, for collectors) when stderr is not a terminal, a coloured
console renderer when it is. Library code never configures logging on import; ``App.run()``
does it when nobody has.

While a handler runs, the dispatcher puts the event it handles into a context variable
(:func:`bind_event`); the :func:`add_event_context` processor then adds ``event_id``,
``event_type`` and ``correlation_id`` to every line logged in that task, whichever logger logs
it. Payloads and secrets stay out: the envelope's ``data`` is never attached, and
:func:`redact_sensitive` blanks fields whose names look like payloads or credentials, in case
user code passes them.
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
    "reset_event",
    "shared_processors",
]

REDACTED: Final = "[redacted]"

_current_event: ContextVar[Event | None] = ContextVar("contexten_current_event", default=None)

# Field names that carry payloads: never logged, whatever their value.
_PAYLOAD_KEYS: Final = frozenset({"data", "payload", "body", "headers", "raw_body"})
# Substrings of field names that carry credentials.
_SECRET_PARTS: Final = (
    "secret",
    "token",
    "password",
    "passwd",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
    "signature",
    "private_key",
)


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
    """structlog processor: add the name the logger was created with, as ``logger``."""
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _is_sensitive(key: str) -> bool:
    lowered = key.lower()
    return lowered in _PAYLOAD_KEYS or any(part in lowered for part in _SECRET_PARTS)


def redact_sensitive(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: blank fields named like payloads (``data``) or secrets (``token``)."""
    for key in [k for k in event_dict if k != "event" and _is_sensitive(k)]:
        event_dict[key] = REDACTED
    return event_dict


def shared_processors() -> list[Processor]:
    """The processors every Contexten log line goes through, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        add_event_context,
        add_logger_name,
        redact_sensitive,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


class _StreamLogger:
    """Writes each rendered line to a stream, resolving ``sys.stderr`` at write time.

    Resolving late keeps working when something (a test runner, a daemoniser) swaps
    ``sys.stderr`` after logging was configured.
    """

    def __init__(self, stream: TextIO | None = None, name: str | None = None) -> None:
        self._stream = stream
        self.name = name

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(
    *, json: bool | None = None, level: int | str = "INFO", stream: TextIO | None = None
) -> None:
    """Configure structlog for the whole process.

    Args:
        json: JSON lines if True, console lines if False; None picks JSON unless the output
            stream is a terminal.
        level: the lowest level logged (a name like ``"DEBUG"`` or a ``logging`` constant).
        stream: where lines go (default: ``sys.stderr``, looked up at each write).
    """
    out = stream or sys.stderr
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: list[Processor]
    if json:
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=[*shared_processors(), *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        context_class=dict,
        logger_factory=lambda *args: _StreamLogger(stream, str(args[0]) if args else None),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "contexten", **initial: Any) -> Any:
    """A structlog logger named ``name`` with ``initial`` fields bound.

    The logger is lazy: it follows the configuration current when it logs, so loggers made
    before :func:`configure_logging` (at import or construction time) still obey it.
    """
    return structlog.get_logger(name, **initial)
