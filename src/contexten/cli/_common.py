"""Shared plumbing for the ``contexten`` command: store option, async runner, output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import msgspec

from contexten.exceptions import ContextenError
from contexten.security.audit import audit_type, cli_client, cli_principal, record_audit
from contexten.store import EventStore, create_store, store_url_from_env

__all__ = [
    "audit",
    "echo_json",
    "fail",
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


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with status 1 (no traceback)."""
    click.echo(f"error: {message}", err=True)
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


def echo_json(obj: Any) -> None:
    """Print ``obj`` as one JSON object on one line."""
    click.echo(_encoder.encode(obj).decode())
