"""Actions: the mutating platform calls, each with its compensation beside it.

An :class:`Action` is an async callable (``await linear.move_issue(issue_id, state="Done")``)
with an :attr:`Action.undo` compensation, so a workflow step can say::

    await wf.step(linear.move_issue, issue_id, state="In Review",
                  compensate=linear.move_issue.undo)

**Calling convention** (what a workflow engine relies on):

- an action accepts ``idempotency_key: str | None = None``; pass the step's key and a retried
  (or re-run after a crash) call does not make a second object;
- an action accepts ``client=`` to use a specific client; without it the client comes from
  the registry in force (:func:`~contexten.integrations.client.use_clients`);
- ``action.undo(*step_args, result=step_result, **step_kwargs)`` undoes a completed call;
  ``result`` is what the action returned (the undo needs it: the id of the comment to delete,
  the state to move back to). Undos are idempotent: undoing something already gone succeeds.
  An action that cannot be undone (merging a PR) has ``undo = None``.

Every call (and every undo) is reported to the :class:`ActionRecorder` in force as an
:class:`ActionRecord`; the App appends it as a ``contexten.action.*`` event, which is how the
webhook our own action triggers is recognised as an echo (:mod:`contexten.integrations.echo`).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from contexten.events import Event

__all__ = [
    "Action",
    "ActionRecord",
    "ActionRecorder",
    "Compensation",
    "action",
    "current_recorder",
    "use_recorder",
]

P = ParamSpec("P")
R = TypeVar("R")

Compensation = Callable[..., Awaitable[Any]]
"""``undo(*step_args, result=..., **step_kwargs)``: undoes a completed action."""

Fingerprinter = Callable[[Any], Sequence[str]]


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action Contexten took on a platform.

    Attributes:
        platform: ``github``, ``linear``, ``slack`` or ``codegen``.
        action: the action's name (``create_issue_comment``; ``create_issue_comment.undo``).
        idempotency_key: the key the call carried, if any.
        fingerprints: ids of the objects it touched, as webhook payloads name them
            (``github:IC_kwDO...``, ``linear:<uuid>``, ``slack:C123:1700000000.000100``):
            what echo detection matches.
        result: a small summary of what the platform returned (id, number, url...).
    """

    platform: str
    action: str
    idempotency_key: str | None = None
    fingerprints: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def event_type(self) -> str:
        """The event type the App records it as: ``contexten.action.<platform>.<action>``."""
        return f"contexten.action.{self.platform}.{self.action.replace('.', '_')}"

    def to_event(self) -> Event:
        """This record as an event (what the App appends)."""
        return Event(
            type=self.event_type,
            source="contexten",
            data={
                "platform": self.platform,
                "action": self.action,
                "idempotency_key": self.idempotency_key,
                "fingerprints": list(self.fingerprints),
                "result": self.result,
            },
        )


class ActionRecorder(Protocol):
    """Receives every action taken (the App implements it by appending an event)."""

    async def record(self, record: ActionRecord) -> None:
        """Record ``record``; must not raise for ordinary failures (the action is done)."""


_recorder: contextvars.ContextVar[ActionRecorder | None] = contextvars.ContextVar(
    "contexten_action_recorder", default=None
)


def current_recorder() -> ActionRecorder | None:
    """The recorder in force, if any."""
    return _recorder.get()


@contextmanager
def use_recorder(recorder: ActionRecorder | None) -> Iterator[None]:
    """Report actions taken inside the block to ``recorder``."""
    token = _recorder.set(recorder)
    try:
        yield
    finally:
        _recorder.reset(token)


_SUMMARY_KEYS = (
    "id",
    "node_id",
    "number",
    "identifier",
    "html_url",
    "url",
    "ts",
    "channel",
    "status",
    "web_url",
)


def summarize(result: Any) -> dict[str, Any]:
    """The identifying fields of a platform response (what an action record keeps)."""
    if not isinstance(result, dict):
        return {}
    return {k: result[k] for k in _SUMMARY_KEYS if k in result and not isinstance(result[k], dict)}


class Action(Generic[P, R]):
    """A mutating platform call with its compensation; see the module docstring.

    Args:
        fn: the coroutine function doing the call.
        platform: the platform's name.
        fingerprint: ids of the objects a result touched (for echo detection).
    """

    undo: Action[..., Any] | None

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        platform: str,
        fingerprint: Fingerprinter | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self.platform = platform
        self.name: str = fn.__name__
        self._fingerprint = fingerprint
        self.undo = None
        self.__signature__ = inspect.signature(fn)

    def __repr__(self) -> str:
        return f"<action {self.platform}.{self.name}>"

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result = await self._fn(*args, **kwargs)
        recorder = _recorder.get()
        if recorder is not None:
            key = kwargs.get("idempotency_key")
            fingerprints = tuple(self._fingerprint(result)) if self._fingerprint else ()
            await recorder.record(
                ActionRecord(
                    platform=self.platform,
                    action=self.name,
                    idempotency_key=key if isinstance(key, str) else None,
                    fingerprints=fingerprints,
                    result=summarize(result),
                )
            )
        return result

    def compensation(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Decorator: make ``fn`` this action's :attr:`undo`."""
        undo: Action[..., Any] = Action(fn, platform=self.platform, fingerprint=self._fingerprint)
        undo.name = f"{self.name}.undo"
        self.undo = undo
        return fn


def action(
    *, platform: str, fingerprint: Fingerprinter | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Action[P, R]]:
    """Decorator: turn a coroutine function into an :class:`Action`."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Action[P, R]:
        return Action(fn, platform=platform, fingerprint=fingerprint)

    return wrap
