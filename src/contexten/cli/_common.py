"""Shared plumbing for the ``contexten`` command: store option, async runner, output.

Everything the command prints that came from the store or a server (subjects, ids, types,
stream names, error messages) goes through :func:`clean` (plain text), :func:`markup` (for
rich) or :func:`echo_json`, so a webhook cannot retitle, clear or scribble on the operator's
terminal with control characters or ANSI escape sequences, nor style it with rich markup.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from functools import wraps
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click
import msgspec
from rich.markup import escape as escape_markup

from contexten.exceptions import ContextenError
from contexten.observability.redaction import escape_control, redact_text
from contexten.security.audit import audit_type, cli_client, cli_principal, record_audit
from contexten.store import EventStore, create_store, store_url_from_env

__all__ = [
    "audit",
    "clean",
    "echo_json",
    "fail",
    "markup",
    "open_store",
    "run_async",
    "store_option",
    "with_store",
]

P = ParamSpec("P")
T = TypeVar("T")

store_option = click.option(
    "--store",
    "store_url",
    envvar="CONTEXTEN_STORE_URL",
    default=None,
    show_envvar=True,
    help="Event store URL (default: sqlite:///contexten.db).",
)


store_wait_option = click.option(
    "--store-wait",
    "store_wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="CONTEXTEN_STORE_OPEN_WAIT",
    help="Seconds to keep retrying an unreachable store at start (PostgreSQL down or "
    "restarting) before exiting with status 1 (0: fail at once). Unless the App sets "
    "store_open_wait itself.",
)
"""``--store-wait`` of the commands that start an App (``serve``, ``worker``)."""


def clean(value: object) -> str:
    """``value`` as one line of inert text: control characters and escape sequences written
    out (``\\x1b[2J``, ``\\n``), credentials in quoted URLs redacted."""
    return escape_control(redact_text(str(value)))


def markup(value: object) -> str:
    """:func:`clean`, and rich markup escaped too (``[bold]`` prints as itself): for a value
    put into a string that rich renders."""
    return escape_markup(clean(value))


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with status 1 (no traceback).

    The message is :func:`clean`-ed: it may quote a store URL or a stored value.
    """
    click.echo(f"error: {clean(message)}", err=True)
    sys.exit(1)


def run_async(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command body, turning Contexten errors into clear one-line messages."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except ContextenError as e:
            fail(str(e))

    return wrapper


async def open_store(url: str | None) -> EventStore:
    """Create and open the store named by ``url`` (or the environment's default)."""
    store = create_store(url or store_url_from_env())
    await store.open()
    return store


async def with_store(url: str | None, body: Callable[[EventStore], Awaitable[T]]) -> T:
    """Open the store, run ``body`` with it, and close it whatever happens."""
    store = await open_store(url)
    try:
        return await body(store)
    finally:
        await store.close()


async def audit(
    store: EventStore, action: str, *, target: str, outcome: str, detail: str | None = None
) -> None:
    """Record an operator/admin command as an audit event (who: the OS user, from: this host).

    Raises:
        StoreUnavailable: it could not be recorded (the command then fails loudly).
    """
    await record_audit(
        store,
        audit_type(action),
        principal=cli_principal(),
        client=cli_client(),
        outcome=outcome,
        target=target,
        detail=detail,
    )


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_default)
# JSON escapes C0 controls (ESC is \u001b); these it may leave raw, and a terminal may act on
# them: DEL, the C1 controls (0x9b is CSI), line separators, bidirectional overrides.
_UNSAFE_IN_JSON: Final = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def echo_json(obj: Any) -> None:
    """Print ``obj`` as one JSON object on one line, every control character escaped."""
    text = _encoder.encode(obj).decode()
    click.echo(_UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", text))
