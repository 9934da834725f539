"""How a process that Contexten owns runs: its event loop and its garbage collector.

``contexten serve`` runs under uvicorn, which picks ``uvloop`` when it is installed (it is a
dependency on CPython). ``contexten worker`` and :meth:`App.run() <contexten.App.run>` run
the same App code, so they use the same loop (:func:`run`), which the tests of ``serve``
already exercise. Measured (bench/README.md): the workflow engine, which lives on tasks,
futures and timers, uses 4-8% less CPU per workflow on it (B2); the dispatcher the same CPU
per event, with steadier latency (B1 at 1,000 events/s: p99 6-8 ms in every run).
``CONTEXTEN_EVENT_LOOP=asyncio`` turns it off (for a platform or a debugger that needs the
standard loop); ``uvloop`` requires it.

A long-running process also tunes the cyclic garbage collector (:func:`serving_gc`). Code
that embeds an App in its own ``asyncio.run`` keeps its own loop and collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Callable, Coroutine, Iterator
from importlib.util import find_spec
from typing import Any, Final, TypeVar

from contexten.exceptions import ConfigurationError

__all__ = ["EVENT_LOOP_ENV", "loop_choice", "loop_factory", "run", "serving_gc"]

EVENT_LOOP_ENV: Final = "CONTEXTEN_EVENT_LOOP"

_GC_YOUNG_THRESHOLD: Final = 7_000
"""Allocations between young-generation collections while a process serves."""

T = TypeVar("T")


def loop_choice() -> str:
    """``CONTEXTEN_EVENT_LOOP``: ``auto`` (the default: uvloop when installed), ``asyncio``
    or ``uvloop``; the names uvicorn's ``loop`` setting takes too.

    Raises:
        ConfigurationError: the variable names another loop.
    """
    choice = (os.environ.get(EVENT_LOOP_ENV) or "auto").strip().lower()
    if choice not in ("auto", "asyncio", "uvloop"):
        raise ConfigurationError(
            f"{EVENT_LOOP_ENV} must be auto, asyncio or uvloop, not {choice[:40]!r}"
        )
    return choice


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes this process's event loop (see :func:`loop_choice`).

    Raises:
        ConfigurationError: the variable names another loop, or ``uvloop`` is asked for and
            not installed.
    """
    choice = loop_choice()
    if choice == "asyncio" or (choice == "auto" and find_spec("uvloop") is None):
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        raise ConfigurationError(f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed") from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion in a new event loop from :func:`loop_factory`, like
    :func:`asyncio.run` (which it is, with the loop chosen)."""
    try:
        factory = loop_factory()
    except ConfigurationError:
        main.close()  # never awaited: close it so Python does not warn about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


@contextlib.contextmanager
def serving_gc() -> Iterator[None]:
    """Freeze what exists at startup and collect the young generation less often, then undo.

    Why: each decoded webhook allocates a few hundred containers, so with the default
    threshold (700) the collector ran every few requests and re-scanned the long-lived
    objects of the App and its imports: ~0.8 s of collection in a 5 s B3 run at c=50, about
    10% of the event loop's thread. Frozen objects are never scanned (they are still freed by
    reference counting); cycles made while serving are still collected, just in fewer, larger
    passes.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(previous[0], _GC_YOUNG_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
