"""State-machine workflows: declared states and transitions, driven by events.

A :class:`StateMachine` has one instance per key (``key(event)``, e.g. the pull request).
An instance is created by the first event that a transition from ``initial`` accepts; from
then on every event a transition of the machine listens to is decided against the instance's
current state: the first transition whose source is the current state, whose pattern matches
and whose guard (``when``) holds is taken; if none is, the event is recorded as rejected
(``contexten.workflow.transition_rejected``) and the state does not change. Each taken
transition, and its action's result, are events in the instance's stream, like any workflow.

The decision is a pure function (:meth:`StateMachine.decide`), which is what the Hypothesis
stateful tests drive against a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contexten.events.envelope import Event
from contexten.events.patterns import Pattern, compile_pattern
from contexten.exceptions import ConfigurationError
from contexten.resilience.retry import RetryPolicy

__all__ = ["Decision", "StateMachine", "Transition"]


@dataclass(frozen=True)
class Transition:
    """A transition: from ``source`` (a state or several) on an event of type ``on``, to ``to``.

    Args:
        source: the state(s) the transition leaves; ``"*"`` means any non-terminal state.
        on: an event-type pattern.
        to: the state it enters.
        when: a guard on the event; the transition is taken only when it returns true.
        action: a step run (durably, with retries and an idempotency key) when the transition
            is taken, called with the event; its result is recorded.
        retry: the action's retry policy (default: the engine's).
        name: a label for diagrams and history (default ``"{sources}->{to}"``).
    """

    source: str | Sequence[str]
    on: str
    to: str
    when: Callable[[Event], bool] | None = None
    action: Callable[..., Any] | None = None
    retry: RetryPolicy | None = None
    name: str | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The source states as a tuple."""
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)

    @property
    def pattern(self) -> Pattern:
        """The compiled event-type pattern."""
        return compile_pattern(self.on)

    @property
    def label(self) -> str:
        """The transition's name."""
        return self.name or f"{'|'.join(self.sources)}->{self.to}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What an event does to an instance in a state: the transition taken, or why not."""

    transition: Transition | None
    index: int
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether a transition is taken."""
        return self.transition is not None


@dataclass
class StateMachine:
    """A state-machine workflow definition.

    Args:
        name: the machine's name (instance ids are ``"{name}:{key}"``).
        initial: the state a new instance starts in.
        transitions: the transitions, tried in order.
        key: the instance key of an event (default: its correlation id, else its subject);
            events whose key is None are ignored.
        terminal: states in which the instance completes (default: states no transition
            leaves).
        version: recorded in each instance's history.
    """

    name: str
    initial: str
    transitions: Sequence[Transition]
    key: Callable[[Event], str | None] | None = None
    terminal: Iterable[str] | None = None
    version: str = "1"
    _terminal: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.transitions:
            raise ConfigurationError(f"state machine {self.name!r} has no transitions")
        self.transitions = list(self.transitions)
        for t in self.transitions:
            t.pattern  # noqa: B018 - compiles, raising InvalidPattern early
        if self.terminal is not None:
            self._terminal = frozenset(self.terminal)
        else:
            leaving = {s for t in self.transitions for s in t.sources if s != "*"}
            self._terminal = frozenset(self.states - leaving - {self.initial})
        if not any(self.initial in t.sources or "*" in t.sources for t in self.transitions):
            raise ConfigurationError(
                f"state machine {self.name!r}: no transition leaves the initial state "
                f"{self.initial!r}, so no instance could ever be created"
            )

    @property
    def states(self) -> frozenset[str]:
        """Every state named by the machine."""
        names = {self.initial}
        for t in self.transitions:
            names.update(s for s in t.sources if s != "*")
            names.add(t.to)
        return frozenset(names)

    @property
    def terminal_states(self) -> frozenset[str]:
        """The states in which an instance completes."""
        return self._terminal

    def listens_to(self, event_type: str) -> bool:
        """Whether any transition's pattern matches ``event_type``."""
        return any(t.pattern.matches(event_type) for t in self.transitions)

    def key_of(self, event: Event) -> str | None:
        """The instance key of ``event`` (None: the event is not for this machine)."""
        if self.key is not None:
            value = self.key(event)
            return None if value is None else str(value)
        return event.correlation_id or event.subject

    def instance_id(self, key: str) -> str:
        """The workflow id of the instance for ``key``."""
        return f"{self.name}:{key}"

    def decide(self, state: str, event: Event) -> Decision:
        """The transition ``event`` takes from ``state`` (pure; guards are called).

        A guard that raises counts as false, and its error is the rejection reason if no
        other transition is taken.
        """
        if state in self._terminal:
            return Decision(None, -1, f"state {state!r} is terminal")
        reason = f"no transition from {state!r} on {event.type!r}"
        for index, t in enumerate(self.transitions):
            if not (state in t.sources or "*" in t.sources) or not t.pattern.matches(event.type):
                continue
            if t.when is not None:
                try:
                    ok = bool(t.when(event))
                except Exception as e:
                    reason = f"guard of {t.label} raised {type(e).__name__}: {e}"
                    continue
                if not ok:
                    reason = f"guard of {t.label} is false"
                    continue
            return Decision(t, index)
        return Decision(None, -1, reason)

    def to_mermaid(self, current: str | Any | None = None) -> str:
        """A Mermaid ``stateDiagram-v2`` of the machine.

        Args:
            current: a state name, or an instance snapshot (anything with a ``state``
                attribute, e.g. :class:`~contexten.workflows.WorkflowInfo`), to highlight.
        """
        if current is not None and not isinstance(current, str):
            current = getattr(current, "state", None)
        ids = {s: _mermaid_id(s, i) for i, s in enumerate(sorted(self.states))}
        lines = ["stateDiagram-v2"]
        for state, ident in ids.items():
            if ident != state:
                lines.append(f'    state "{state}" as {ident}')
        lines.append(f"    [*] --> {ids[self.initial]}")
        for t in self.transitions:
            label = t.on + (" [guarded]" if t.when is not None else "")
            sources = sorted(self.states - self._terminal) if "*" in t.sources else t.sources
            for s in sources:
                lines.append(f"    {ids[s]} --> {ids[t.to]}: {label}")
        for s in sorted(self._terminal):
            lines.append(f"    {ids[s]} --> [*]")
        if isinstance(current, str) and current in ids:
            lines.append("    classDef current fill:#fde68a,stroke:#b45309,stroke-width:2px")
            lines.append(f"    class {ids[current]} current")
        return "\n".join(lines) + "\n"


_MERMAID_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _mermaid_id(state: str, index: int) -> str:
    return state if _MERMAID_ID.match(state) else f"s{index}"
