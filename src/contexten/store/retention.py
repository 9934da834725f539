"""Bounded growth: forget old dedup keys, drop the data of old events, keep their envelopes.

The log is append-only, and without limits it grows forever: every webhook is stored whole
(1.2 KB for a small one) and every delivery key is kept. A :class:`RetentionPolicy` bounds
both, and :func:`prune` applies it to a store that implements :class:`PrunableStore` (the
memory, SQLite and PostgreSQL stores do):

* **dedup keys** older than ``dedup_window`` are deleted. The window must outlive every
  platform's redelivery (GitHub redelivers for up to three days; the default is seven): a
  delivery redelivered within the window is still recognised, one redelivered after it would
  be stored again.
* **event data**: for each :class:`RetentionRule` (an event type pattern and an age), the
  ``data`` of matching events older than the age is replaced by a marker,
  ``{"$pruned": {"at": ..., "rule": ..., "bytes": ...}}`` (:func:`pruned_marker` reads it).
  The envelope stays (id, type, source, subject, time, correlation and causation ids), so
  positions stay gapless, causation links hold and timelines keep their entries. The
  store also records when (``pruned_at``), so a later run skips it.

What is never touched: the system's own streams (names starting with ``$``: workflow
histories, dead letters, schedules, audit and token records, which the running system reads
back), and the streams a caller protects (:class:`Protected`): the CLI and the App protect
the streams of open dead letters' events, which a redrive delivers again. The protected set
is read once, at the start of a run: a letter parked during the run for an event older
than a rule's age (possible only while a subscription replays old history) is not
protected by that run. The first rule that matches an event's type decides; an event no
rule matches is kept whole.

Rewriting old rows frees their space for reuse inside the database; returning it to the
file system is :meth:`PrunableStore.reclaim_space` (SQLite ``VACUUM``, PostgreSQL
``VACUUM FULL``: both rewrite the table and hold its write lock meanwhile).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable

from contexten.events.envelope import Event
from contexten.events.patterns import Pattern, compile_pattern
from contexten.exceptions import ConfigurationError, InvalidPattern
from contexten.store.base import EventStore

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "PRUNED_KEY",
    "RETENTION_DUE",
    "RETENTION_PRUNED",
    "RETENTION_STREAM",
    "Candidate",
    "Protected",
    "PrunableStore",
    "PruneReport",
    "Pruned",
    "RetentionPolicy",
    "RetentionRule",
    "parse_age",
    "prune",
    "pruned_marker",
    "without_data",
]

PRUNED_KEY: Final = "$pruned"
"""The one key of a pruned event's ``data``; its value says when, by which rule, how much."""

DEFAULT_DEDUP_WINDOW: Final = timedelta(days=7)
"""How long dedup keys are kept by default: longer than any platform redelivers (GitHub: 3
days)."""

RETENTION_DUE: Final = "contexten.retention.due"
"""The event a retention schedule publishes at each tick (see ``App.retention``)."""

RETENTION_PRUNED: Final = "contexten.retention.pruned"
"""Recorded after each pruned batch (rule, count, the work items' pruned entries)."""

RETENTION_STREAM: Final = "$retention"
"""Where each scheduled run records what it pruned (``contexten.retention.applied``)."""

_BATCH: Final = 1000


def parse_age(text: str) -> timedelta:
    """``"90d"``, ``"12h"``, ``"30m"``, ``"45s"`` or ``"2w"`` as a :class:`timedelta`.

    Raises:
        ConfigurationError: not a positive number followed by one of those units.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        number = float(value)
    except ValueError:
        number = -1
    if unit not in units or number <= 0:
        raise ConfigurationError(
            f"bad age {text!r}: a positive number and a unit (s, m, h, d, w), e.g. 90d"
        )
    return timedelta(seconds=number * units[unit])


def _age(value: timedelta | str) -> timedelta:
    return parse_age(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Drop the ``data`` of events whose type matches ``pattern`` once older than ``after``.

    Attributes:
        pattern: an event type pattern (``github.**``, ``slack.*``).
        after: the age (by the store's ``recorded_at``) past which the data goes.
    """

    pattern: str
    after: timedelta
    _compiled: Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.after, timedelta) or self.after <= timedelta(0):
            raise ConfigurationError(f"retention rule {self.pattern!r}: after= must be positive")
        try:
            compiled = compile_pattern(self.pattern)
        except InvalidPattern as e:
            raise ConfigurationError(f"retention rule {self.pattern!r}: {e}") from None
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, event_type: str) -> bool:
        """Whether the rule applies to events of ``event_type``."""
        return self._compiled.matches(event_type)

    @classmethod
    def parse(cls, text: str) -> RetentionRule:
        """A rule from ``PATTERN=AGE`` (``github.**=90d``), as the command line takes it.

        Raises:
            ConfigurationError: no ``=``, a bad pattern or a bad age.
        """
        pattern, sep, age = text.partition("=")
        if not sep or not pattern.strip():
            raise ConfigurationError(
                f"bad retention rule {text!r}: PATTERN=AGE, e.g. github.**=90d"
            )
        return cls(pattern.strip(), parse_age(age))


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What :func:`prune` removes: dedup keys past a window and data per type pattern.

    Attributes:
        dedup_window: dedup keys older than this are deleted (default 7 days; must outlive
            every platform's redelivery).
        rules: data rules; the first that matches an event's type decides.
    """

    dedup_window: timedelta = DEFAULT_DEDUP_WINDOW
    rules: tuple[RetentionRule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.dedup_window, timedelta) or self.dedup_window <= timedelta(0):
            raise ConfigurationError("dedup_window must be a positive timedelta")
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.rules:
            if not isinstance(rule, RetentionRule):
                raise ConfigurationError(f"rules must be RetentionRule, got {rule!r}")

    @classmethod
    def build(
        cls,
        rules: Mapping[str, timedelta | str] | Sequence[RetentionRule | str] = (),
        *,
        dedup_window: timedelta | str = DEFAULT_DEDUP_WINDOW,
    ) -> RetentionPolicy:
        """A policy from ``{"github.**": timedelta(days=90)}``, ``["github.**=90d"]`` or
        :class:`RetentionRule` objects; ages may be written ``"90d"``.

        Raises:
            ConfigurationError: a bad pattern or age.
        """
        built: list[RetentionRule] = []
        if isinstance(rules, Mapping):
            for pattern, age in rules.items():
                built.append(RetentionRule(pattern, _age(age)))
        else:
            for rule in rules:
                built.append(RetentionRule.parse(rule) if isinstance(rule, str) else rule)
        return cls(dedup_window=_age(dedup_window), rules=tuple(built))

    def rule_for(self, event_type: str) -> RetentionRule | None:
        """The first rule matching ``event_type``, or None (the event is kept whole)."""
        for rule in self.rules:
            if rule.matches(event_type):
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event old enough that a rule may prune it (no data read).

    Attributes:
        position: its log position.
        stream: its stream.
        type: its type.
        recorded_at: when the store recorded it.
        size: its stored body's size in bytes.
    """

    position: int
    stream: str
    type: str
    recorded_at: datetime
    size: int


@dataclass(frozen=True, slots=True)
class Pruned:
    """An event whose data was just removed: where it is, and the work item it belongs to."""

    position: int
    correlation_id: str | None


@runtime_checkable
class PrunableStore(Protocol):
    """What a store offers so that :func:`prune` can bound its growth."""

    async def prune_dedup(self, before: datetime, *, dry_run: bool = False) -> int:
        """Delete the dedup keys recorded before ``before`` (or count them); how many."""
        ...

    async def retention_candidates(
        self, *, before: datetime, after: int = 0, limit: int = 1000
    ) -> list[Candidate]:
        """Unpruned events outside system streams, recorded before ``before``, with
        positions above ``after``, in log order, at most ``limit``."""
        ...

    async def prune_event_data(
        self, positions: Sequence[int], marker: Mapping[str, Any], *, at: datetime
    ) -> list[Pruned]:
        """Replace the ``data`` of the events at ``positions`` by ``{PRUNED_KEY: marker}``
        plus their original size, and mark them pruned at ``at``, in one transaction; the
        events rewritten (already pruned ones are skipped)."""
        ...

    async def storage_bytes(self) -> int:
        """The space the store takes (SQLite: the file and its WAL; PostgreSQL: its
        tables with their indexes and TOAST)."""
        ...

    async def reclaim_space(self) -> None:
        """Give the space freed by pruning back to the file system (rewrites the tables
        and holds the write lock meanwhile)."""
        ...


@dataclass(frozen=True, slots=True)
class Protected:
    """Streams :func:`prune` must leave whole, besides every system (``$``) stream."""

    streams: frozenset[str] = frozenset()
    positions: frozenset[int] = frozenset()


@dataclass(slots=True)
class PruneReport:
    """What a :func:`prune` run removed (or, dry, would remove).

    Attributes:
        dry_run: nothing was changed.
        dedup_keys: dedup keys deleted (or due).
        events: events whose data was dropped (or due), per rule pattern.
        data_bytes: stored bytes of those events before pruning.
        protected: events a rule matched but that were kept (open dead letters' streams).
        size_before: the store's size before (bytes), if measured.
        size_after: after pruning (and reclaiming, if asked), if measured.
    """

    dry_run: bool
    dedup_keys: int = 0
    events: dict[str, int] = field(default_factory=dict)
    data_bytes: int = 0
    protected: int = 0
    size_before: int | None = None
    size_after: int | None = None

    @property
    def pruned_events(self) -> int:
        """Events pruned (or due), all rules together."""
        return sum(self.events.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly values."""
        return {
            "dry_run": self.dry_run,
            "dedup_keys": self.dedup_keys,
            "events": dict(self.events),
            "pruned_events": self.pruned_events,
            "data_bytes": self.data_bytes,
            "protected": self.protected,
            "size_before": self.size_before,
            "size_after": self.size_after,
        }

    def summary(self) -> str:
        """One line for logs and the audit record."""
        verb = "would prune" if self.dry_run else "pruned"
        return (
            f"{verb} {self.dedup_keys} dedup keys and the data of {self.pruned_events} events "
            f"({self.data_bytes} bytes); {self.protected} kept for open dead letters"
        )


def pruned_marker(event: Event) -> Mapping[str, Any] | None:
    """The marker of an event whose data a retention rule removed, or None (intact)."""
    data = event.data
    if len(data) == 1 and PRUNED_KEY in data and isinstance(data[PRUNED_KEY], Mapping):
        marker: Mapping[str, Any] = data[PRUNED_KEY]
        return marker
    return None


def without_data(event: Event, marker: Mapping[str, Any], size: int) -> Event:
    """``event`` with its data replaced by the pruned marker (and the original size)."""
    return event.replace(data={PRUNED_KEY: {**marker, "bytes": size}})


ProtectedSource = Callable[[], Awaitable[Protected]]
"""Called once per run, before anything is pruned: the streams to leave whole."""


async def prune(
    store: EventStore,
    policy: RetentionPolicy,
    *,
    protected: ProtectedSource | None = None,
    dry_run: bool = True,
    reclaim: bool = False,
    measure: bool = True,
    now: datetime | None = None,
) -> PruneReport:
    """Apply ``policy`` to ``store``: dedup keys past the window, data per rule.

    Idempotent: a second run finds nothing more to do. Each batch of events is rewritten in
    its own transaction, so a run stopped midway leaves every event either whole or pruned.
    After each batch a ``contexten.retention.pruned`` event in :data:`RETENTION_STREAM`
    names the rule, the count, and the pruned events that belong to a work item
    (``[correlation id, position]`` pairs), so read models can follow: the work-item
    timelines mark those entries "data removed".

    Args:
        store: the store; it must implement :class:`PrunableStore`.
        policy: what to remove.
        protected: the streams to leave whole (besides system streams), asked once.
        dry_run: only count what would go (the default: nothing changes).
        reclaim: afterwards give the freed space back to the file system (rewrites tables).
        measure: report the store's size before and after.
        now: the time ages are counted from (default: now; tests move it forward).
    """
    if not isinstance(store, PrunableStore):
        raise ConfigurationError(f"{type(store).__name__} does not support pruning")
    now = now or datetime.now(UTC)
    report = PruneReport(dry_run=dry_run)
    if measure:
        report.size_before = await store.storage_bytes()
    report.dedup_keys = await store.prune_dedup(now - policy.dedup_window, dry_run=dry_run)
    if policy.rules:
        keep = await protected() if protected is not None else Protected()
        await _prune_data(store, store, policy, keep, now=now, dry_run=dry_run, report=report)
    if reclaim and not dry_run:
        await store.reclaim_space()
    if measure:
        report.size_after = await store.storage_bytes()
    return report


async def _prune_data(
    store: EventStore,
    prunable: PrunableStore,
    policy: RetentionPolicy,
    keep: Protected,
    *,
    now: datetime,
    dry_run: bool,
    report: PruneReport,
) -> None:
    latest = now - min(rule.after for rule in policy.rules)
    marker_at = now.isoformat()
    after = 0
    while True:
        batch = await prunable.retention_candidates(before=latest, after=after, limit=_BATCH)
        if not batch:
            return
        after = batch[-1].position
        chosen: dict[str, list[Candidate]] = {}
        for candidate in batch:
            rule = policy.rule_for(candidate.type)
            if rule is None or candidate.recorded_at >= now - rule.after:
                continue
            if candidate.stream in keep.streams or candidate.position in keep.positions:
                report.protected += 1
                continue
            chosen.setdefault(rule.pattern, []).append(candidate)
        for pattern, candidates in chosen.items():
            done = len(candidates)
            if not dry_run:
                done = await _prune_batch(store, prunable, pattern, candidates, marker_at, now)
            report.events[pattern] = report.events.get(pattern, 0) + done
            report.data_bytes += sum(c.size for c in candidates)
        if len(batch) < _BATCH:
            return


async def _prune_batch(
    store: EventStore,
    prunable: PrunableStore,
    pattern: str,
    candidates: list[Candidate],
    marker_at: str,
    now: datetime,
) -> int:
    marker = {"at": marker_at, "rule": pattern}
    done = await prunable.prune_event_data([c.position for c in candidates], marker, at=now)
    if done:
        items = [[p.correlation_id, p.position] for p in done if p.correlation_id]
        record = Event(
            type=RETENTION_PRUNED,
            data={"rule": pattern, "at": marker_at, "events": len(done), "work_items": items},
        )
        await store.append(RETENTION_STREAM, [record])
    return len(done)
