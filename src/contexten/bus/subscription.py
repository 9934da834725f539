"""Subscriptions: which events a handler gets, and how they are delivered to it.

A :class:`Subscription` is data: a durable name (its checkpoint is stored under it), the type
patterns and optional ``where`` predicate that select events, the handler, and the delivery
settings (retry policy, concurrency, per-handler timeout, ordering key, where to start).
The dispatcher reads it; ``@app.on(...)`` builds one.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Literal, TypeAlias

from contexten.events.envelope import Event
from contexten.events.patterns import Pattern, compile_pattern
from contexten.exceptions import ConfigurationError
from contexten.resilience.retry import RetryPolicy
from contexten.store.base import SYSTEM_STREAM_PREFIX, is_system_stream

if TYPE_CHECKING:
    from contexten.bus.context import HandlerContext

__all__ = [
    "SYSTEM_STREAM_PREFIX",
    "Handler",
    "KeyFunction",
    "Predicate",
    "StartFrom",
    "Subscription",
    "app_root",
    "default_key",
    "default_name",
    "is_system_stream",
]


Handler: TypeAlias = "Callable[[Event, HandlerContext], Awaitable[None]]"
"""``async def handler(event, ctx) -> None``; raising means the attempt failed."""

Predicate: TypeAlias = Callable[[Event], bool]
"""A ``where`` filter: True to deliver the event."""

KeyFunction: TypeAlias = Callable[[Event], "str | None"]
"""The ordering key of an event; events with equal keys are handled one at a time, in log
order. None: no ordering constraint for that event."""

StartFrom: TypeAlias = Literal["beginning", "now"]


def default_key(event: Event) -> str | None:
    """Order by the event's correlation id, else its subject (``Event.ordering_key``)."""
    return event.correlation_id or event.subject


_MAX_NAME = 200


def app_root(depth: int = 1) -> str:
    """The directory default subscription names are relative to: that of the first calling
    file outside Contexten (the file that builds the App), else the current directory.

    The file that defines the App sits at a fixed place in the project, however the process
    is launched; the current directory does not (``cd`` elsewhere and every name would move).
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame: FrameType | None = sys._getframe(depth)  # the caller's file, cheaply
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith("<") and not os.path.abspath(path).startswith(package + os.sep):
            return os.path.dirname(os.path.abspath(path))
        frame = frame.f_back
    return os.getcwd()


def default_name(handler: Callable[..., object], root: str) -> str:
    """A subscription name for ``handler`` that does not depend on how its module was launched.

    It is ``{file relative to root, as a dotted path}.{qualname}``: ``app.py``'s ``triage``
    is ``app.triage`` whether the file ran as ``python app.py`` (module ``__main__``) or was
    imported as ``app`` by ``contexten serve --app app.py:app``; ``pkg/rules.py`` gives
    ``pkg.rules.triage``, the module's own name when ``root`` is on the import path. A handler
    whose file is outside ``root`` (an installed library) keeps its module name; one without
    a file (a REPL) too, unless that is ``__main__``, which is refused as unstable.

    Raises:
        ConfigurationError: no stable name can be derived; pass ``name=``.
    """
    target = inspect.unwrap(handler)
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    try:
        path = inspect.getsourcefile(target) or inspect.getfile(target)
    except TypeError:
        path = None
    if path and not path.startswith("<"):
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if not relative.startswith(os.pardir + os.sep) and relative != os.pardir:
            stem, _ = os.path.splitext(relative)
            parts = stem.split(os.sep)
            if parts[-1] == "__init__" and len(parts) > 1:
                parts.pop()
            return f"{'.'.join(parts)}.{qualname}"
        if module == "__main__":
            return f"{os.path.splitext(os.path.basename(path))[0]}.{qualname}"
    if module == "__main__":
        raise ConfigurationError(
            f"cannot derive a stable subscription name for {qualname!r} (no source file): "
            "pass name=..."
        )
    return f"{module}.{qualname}"


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("a subscription needs a non-empty name")
    if name != name.strip() or len(name) > _MAX_NAME or not name.isprintable():
        raise ConfigurationError(
            f"subscription name {name[:_MAX_NAME]!r}: at most {_MAX_NAME} printable "
            "characters, without leading or trailing spaces (it is stored as the checkpoint "
            "key and shown in logs and metrics)"
        )
    return name


def _unordered(event: Event) -> None:
    return None


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _build_matcher(patterns: tuple[Pattern, ...]) -> Callable[[str], bool]:
    """The cheapest test for "does this type match any of the patterns"."""
    if all(p.is_exact for p in patterns):
        exact = frozenset(p.text for p in patterns)
        if len(exact) == 1:
            (only,) = exact
            return only.__eq__
        return exact.__contains__
    if len(patterns) == 1:
        return patterns[0].matches
    return lambda event_type: any(p.matches(event_type) for p in patterns)


@dataclass(frozen=True, eq=False)
class Subscription:
    """A named, durable interest in events, and how to deliver them.

    Attributes:
        name: unique and stable: the checkpoint is stored as ``sub:{name}``, and renaming a
            subscription makes it start over.
        patterns: one type pattern or several (``"github.pull_request.*"``, ``"linear.**"``).
        handler: ``async def handler(event, ctx)``.
        where: optional predicate; events for which it returns False count as handled. If it
            raises, the event is delivered and the predicate re-evaluated as part of each
            attempt, so its error is retried and dead-lettered like a handler's.
        retry: the retry policy for failing attempts; after the last, the event is parked in
            the dead-letter queue.
        concurrency: at most this many events are handled at once.
        timeout: seconds (or a timedelta) one attempt may run before it is cancelled and
            counted as failed with :class:`~contexten.exceptions.HandlerTimeout`; None: no limit.
        key: the ordering key (default: correlation id, else subject). Events with the same
            key are handled one after another in log order; different keys run in parallel.
            None: no ordering at all (every event may run in parallel with every other).
        start: where a subscription seen for the first time starts: ``"beginning"`` of the
            log (nothing stored is missed) or ``"now"`` (only events stored from now on).
        include_system: also deliver events of ``$``-prefixed system streams.
        echoes: also deliver *echoes*, the webhooks our own actions caused (a comment we
            posted coming back as ``github.issue_comment.created``). The
            :class:`~contexten.App` filters them out otherwise, so a rule does not trigger
            itself; the bus itself does not look at this flag.
        previous_names: names this subscription was stored under before (an upgrade that
            changed its default name): seen for the first time under ``name``, it starts
            where the first of them that has a stored position left off, instead of at
            ``start``.
    """

    name: str
    patterns: str | Sequence[str]
    handler: Handler
    where: Predicate | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 100
    timeout: float | timedelta | None = 60.0
    key: KeyFunction | None = default_key
    start: StartFrom = "beginning"
    include_system: bool = False
    echoes: bool = False
    previous_names: tuple[str, ...] = ()
    compiled: tuple[Pattern, ...] = field(init=False, repr=False)
    type_matches: Callable[[str], bool] = field(init=False, repr=False)
    """Whether an event type matches the patterns (compiled once)."""
    timeout_seconds: float | None = field(init=False, repr=False)
    key_of: KeyFunction = field(init=False, repr=False)
    """The ordering key function in effect (``key``, or "no key" when ``key`` is None)."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        texts = [self.patterns] if isinstance(self.patterns, str) else list(self.patterns)
        if not texts:
            raise ConfigurationError(f"subscription {self.name!r}: no pattern given")
        compiled = tuple(compile_pattern(t) for t in texts)
        if not callable(self.handler):
            raise ConfigurationError(f"subscription {self.name!r}: the handler is not callable")
        if not inspect.iscoroutinefunction(self.handler) and not inspect.iscoroutinefunction(
            getattr(self.handler, "__call__", None)  # noqa: B004 - async callable objects
        ):
            raise ConfigurationError(
                f"subscription {self.name!r}: the handler must be an async function "
                "(async def handler(event, ctx))"
            )
        if self.key is not None and not callable(self.key):
            raise ConfigurationError(f"subscription {self.name!r}: key= must be callable or None")
        if self.where is not None and not callable(self.where):
            raise ConfigurationError(f"subscription {self.name!r}: where= must be callable")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigurationError(f"subscription {self.name!r}: concurrency must be >= 1")
        seconds = _seconds(self.timeout)
        if seconds is not None and seconds <= 0:
            raise ConfigurationError(f"subscription {self.name!r}: timeout must be > 0")
        if self.start not in ("beginning", "now"):
            raise ConfigurationError(
                f"subscription {self.name!r}: start must be 'beginning' or 'now'"
            )
        object.__setattr__(self, "compiled", compiled)
        object.__setattr__(self, "type_matches", _build_matcher(compiled))
        object.__setattr__(self, "timeout_seconds", seconds)
        object.__setattr__(self, "key_of", self.key if self.key is not None else _unordered)

    @property
    def checkpoint_name(self) -> str:
        """The name this subscription's position is saved under in the store."""
        return f"sub:{self.name}"
