"""Durable schedules: start a workflow (or publish an event) per tick, once across all workers.

A :class:`Schedule` fires on a cron expression in a time zone (``cron="0 9 * * MON-FRI"``,
``timezone="Europe/Berlin"``; parsed by `cronsim`, which follows Debian cron through DST: a
time skipped by the spring change fires at the first valid minute after it, a time repeated
in autumn fires once) or at a fixed interval (``every=timedelta(minutes=5)``).

Each schedule keeps its progress in its own stream, ``$schedule-{name}``. Every worker runs a
:class:`Scheduler` and polls; a worker that finds ticks due decides what to do with them and
commits, in ONE transaction, the schedule's record of those ticks (appended on the condition
that the stream is still at the version it folded: that is the fence) together with the
runs they start (instance ids ``sched:{name}:{tick}``, appended on the condition that they
do not exist). Two workers racing for a tick cannot both win: the loser's append fails
whole, it re-reads the stream and sees the tick done. A worker killed at any point leaves
either nothing (the tick is still due: another worker takes it) or both.

Per tick, the overlap policy decides when the previous scheduled run is still open:
``skip`` (record the tick as skipped), ``buffer_one`` (start it when the previous run
closes; one at most) or ``allow_all``. After downtime, ``catch_up`` decides what happens to
the ticks missed: ``none`` (only a tick at most a minute late runs), ``last`` (the latest
due tick within ``catch_up_window`` runs) or ``all`` (every due tick within the window, at
most ``max_catch_up``); the rest are recorded as missed. Pause, resume, trigger now and
backfill are requests appended to the stream (by the CLI or any process), carried out by
whichever worker polls next. Skipped and missed ticks are counted for ``/metrics``.

The stream's event types (``contexten.schedule.``): ``registered`` (anchor), ``ticked``
(tick, run ids or event id, manual/backfill request), ``skipped`` (tick, reason),
``buffered`` (tick), ``missed`` (count, first, last), ``paused`` / ``resumed`` (at),
``trigger_requested`` (request_id), ``backfill_requested`` (request_id, start, end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError, StoreClosed, StoreError, WrongExpectedVersion
from contexten.store.base import Append, EventStore, RecordedEvent, StreamState
from contexten.workflows.admin import load_state
from contexten.workflows.history import fast_id, history_event, stream_name

if TYPE_CHECKING:
    from contexten.workflows.engine import WorkflowEngine

__all__ = [
    "SCHEDULE_PREFIX",
    "Schedule",
    "ScheduleState",
    "Scheduler",
    "fold_schedule",
    "request_backfill",
    "request_pause",
    "request_trigger",
]

_log = logging.getLogger("contexten.schedules")

SCHEDULE_PREFIX: Final = "$schedule-"
"""Prefix of every schedule's stream."""
_TYPE: Final = "contexten.schedule."
_NONE_GRACE: Final = timedelta(minutes=1)
_POLL: Final = 1.0
_MAX_BACKFILL: Final = 1000
_NAMESPACE: Final = uuid.UUID("0b8f8a43-51e9-4c52-8f2c-6a5d1f0e9c21")

Overlap = Literal["skip", "buffer_one", "allow_all"]
CatchUp = Literal["none", "last", "all"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """What fires when, and what it starts (see the module docstring).

    Attributes:
        name: the schedule's durable name (its stream is ``$schedule-{name}``).
        cron: a five-field cron expression (or ``every``).
        every: a fixed interval from the schedule's first registration (or ``cron``).
        timezone: the IANA zone ``cron`` is read in.
        workflow: the workflow each tick starts, with ``input`` (or ``event``).
        event: the event type each tick publishes to stream ``schedule-{name}``.
        input: the workflow's input, or the event's data (plus ``schedule`` and ``tick``).
        overlap: ``skip``, ``buffer_one`` or ``allow_all`` when the last run is still open.
        catch_up: ``none``, ``last`` or ``all`` for ticks missed while nothing ran.
        catch_up_window: how far back missed ticks may still run.
        max_catch_up: at most this many missed ticks run at once (``all``).
    """

    name: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    workflow: str | None = None
    event: str | None = None
    input: Any = None
    overlap: Overlap = "skip"
    catch_up: CatchUp = "last"
    catch_up_window: timedelta = timedelta(hours=1)
    max_catch_up: int = 10

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"schedule {self.name!r}: give exactly one of cron=, every=")
        if (self.workflow is None) == (self.event is None):
            raise ConfigurationError(
                f"schedule {self.name!r}: give exactly one of workflow=, event="
            )
        if self.every is not None and self.every <= timedelta(0):
            raise ConfigurationError(f"schedule {self.name!r}: every= must be positive")
        if self.overlap not in ("skip", "buffer_one", "allow_all"):
            raise ConfigurationError(f"schedule {self.name!r}: bad overlap {self.overlap!r}")
        if self.catch_up not in ("none", "last", "all"):
            raise ConfigurationError(f"schedule {self.name!r}: bad catch_up {self.catch_up!r}")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"schedule {self.name!r}: unknown time zone {self.timezone!r}"
            ) from None
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime(2000, 1, 1, tzinfo=zone))
            except CronSimError as e:
                raise ConfigurationError(
                    f"schedule {self.name!r}: bad cron expression {self.cron!r}: {e}"
                ) from None

    @property
    def stream(self) -> str:
        """The schedule's stream."""
        return SCHEDULE_PREFIX + self.name

    def ticks(
        self, anchor: datetime, after: datetime, until: datetime, limit: int
    ) -> list[datetime]:
        """The ticks in ``(after, until]`` (at most ``limit``, the latest kept), UTC."""
        out: list[datetime] = []
        if self.every is not None:
            step = self.every
            first = anchor + step * (max((after - anchor) // step, -1) + 1)
            if until < first or limit <= 0:
                return []
            count = (until - first) // step + 1
            return [first + step * i for i in range(max(count - limit, 0), count)]
        zone = ZoneInfo(self.timezone)
        for moment in CronSim(self.cron or "", after.astimezone(zone)):
            if moment > until:
                break
            out.append(moment.astimezone(after.tzinfo))
            if len(out) > limit * 4 + 1000:  # a long downtime: keep the tail only
                out = out[-limit:]
        return out[-limit:] if limit else []

    def next_tick(self, anchor: datetime, after: datetime) -> datetime:
        """The first tick after ``after``."""
        if self.every is not None:
            return anchor + self.every * (max((after - anchor) // self.every, -1) + 1)
        zone = ZoneInfo(self.timezone)
        return next(iter(CronSim(self.cron or "", after.astimezone(zone)))).astimezone(after.tzinfo)


@dataclass(slots=True)
class ScheduleState:
    """A schedule's stream, folded."""

    version: int = 0
    anchor: datetime | None = None
    last_tick: datetime | None = None
    paused: bool = False
    last_run: str | None = None
    buffered: datetime | None = None
    triggers: list[str] = field(default_factory=list)
    backfills: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    ticked: int = 0
    skipped: int = 0
    missed: int = 0


def fold_schedule(records: list[RecordedEvent], into: ScheduleState | None = None) -> ScheduleState:
    """Fold a schedule's stream (or, with ``into``, the records after it) into its state."""
    s = into if into is not None else ScheduleState()
    for rec in records:
        s.version = rec.version
        kind = rec.event.type.removeprefix(_TYPE)
        d = rec.event.data
        at = _time(d.get("tick") or d.get("at"))
        if kind == "registered":
            s.anchor = s.last_tick = at
        elif kind == "ticked":
            s.ticked += 1
            runs = d.get("runs") or []
            s.last_run = runs[-1] if runs else s.last_run
            if d.get("request_id") in s.triggers:
                s.triggers.remove(d["request_id"])
            s.backfills = [b for b in s.backfills if b[0] != d.get("backfill_id")]
            if d.get("buffered"):
                s.buffered = None
            elif at is not None and not d.get("request_id") and not d.get("backfill_id"):
                s.last_tick = max(at, s.last_tick) if s.last_tick else at
        elif kind == "skipped":
            s.skipped += 1
            s.last_tick = at or s.last_tick
        elif kind == "buffered":
            s.buffered = at
            s.last_tick = at or s.last_tick
        elif kind == "missed":
            s.missed += int(d.get("count", 0))
            s.last_tick = _time(d.get("last")) or s.last_tick
        elif kind == "paused":
            s.paused = True
        elif kind == "resumed":
            s.paused = False
            s.last_tick = at or s.last_tick  # ticks of the paused time never run
        elif kind == "trigger_requested":
            s.triggers.append(str(d.get("request_id")))
        elif kind == "backfill_requested":
            start, end = _time(d.get("start")), _time(d.get("end"))
            if start is not None and end is not None:
                s.backfills.append((str(d.get("request_id")), start, end))
    return s


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _event(kind: str, name: str, data: dict[str, Any]) -> Event:
    return Event(
        type=_TYPE + kind, source="contexten.schedules", subject=name, data=data, id=fast_id()
    )


def run_id(name: str, tick: datetime) -> str:
    """The deterministic instance id of a schedule's run for ``tick``."""
    return f"sched:{name}:{tick.isoformat()}"


class Scheduler:
    """Fires the schedules registered on one engine (see the module docstring).

    Args:
        engine: the engine whose workflows ticks start, whose store and clock it uses.
        poll: real seconds between looks at the schedules' streams when no tick is due
            sooner (other workers' pauses and requests are seen within this).
    """

    def __init__(self, engine: WorkflowEngine, poll: float = _POLL) -> None:
        self.engine = engine
        self.poll = poll
        self.schedules: dict[str, Schedule] = {}
        self._states: dict[str, ScheduleState] = {}

    @property
    def store(self) -> EventStore:
        """The engine's store."""
        return self.engine.store

    def add(self, schedule: Schedule) -> Schedule:
        """Register ``schedule``.

        Raises:
            ConfigurationError: the name is taken.
        """
        if schedule.name in self.schedules:
            raise ConfigurationError(f"a schedule named {schedule.name!r} is already registered")
        self.schedules[schedule.name] = schedule
        return schedule

    async def run(self) -> None:
        """Fire what is due, sleep until the next tick (or ``poll``), forever; the engine's
        supervisor runs it (and restarts it if it crashes)."""
        clock = self.engine.clock
        while True:
            wake = clock.now() + timedelta(seconds=self.poll)
            for schedule in list(self.schedules.values()):
                try:
                    due = await self.tick(schedule)
                except asyncio.CancelledError:
                    raise
                except StoreClosed:
                    return
                except StoreError as e:
                    _log.warning("schedule %s: store error, retrying: %s", schedule.name, e)
                    continue
                except Exception:
                    _log.exception("schedule %s: tick failed", schedule.name)
                    continue
                wake = min(wake, due)
            await clock.sleep_until(wake)

    async def state(self, schedule: Schedule) -> ScheduleState:
        """The schedule's folded stream (kept between polls: only new records are read)."""
        cached = self._states.get(schedule.name)
        if cached is None:
            cached = self._states[schedule.name] = ScheduleState()
        newer = await self.store.read_stream(schedule.stream, from_version=cached.version + 1)
        return fold_schedule(newer, cached)

    async def tick(self, schedule: Schedule) -> datetime:
        """Do what is due for ``schedule`` now; returns when to look next.

        Retries on a lost race (another worker committed first) by folding again.
        """
        for _ in range(20):
            state = await self.state(schedule)
            now = self.engine.clock.now()
            if state.anchor is None:
                event = _event("registered", schedule.name, {"at": now.isoformat()})
                with contextlib.suppress(WrongExpectedVersion):
                    await self.store.append(
                        schedule.stream, [event], expected_version=StreamState.NO_STREAM
                    )
                continue
            try:
                await self._decide(schedule, state, now)
            except WrongExpectedVersion:
                continue  # another worker moved the schedule: fold again
            assert state.anchor is not None
            assert state.last_tick is not None
            return schedule.next_tick(state.anchor, max(now, state.last_tick))
        return self.engine.clock.now() + timedelta(seconds=self.poll)

    async def _decide(self, schedule: Schedule, state: ScheduleState, now: datetime) -> None:
        assert state.anchor is not None
        assert state.last_tick is not None
        records: list[Event] = []
        starts: list[tuple[str, dict[str, Any]]] = []  # (run id, extra tick data)
        due = [] if state.paused else schedule.ticks(state.anchor, state.last_tick, now, 10_000)
        previous_open = bool(due or state.buffered) and await self._open(state.last_run)
        if state.buffered is not None and not previous_open:
            starts.append(
                (
                    run_id(schedule.name, state.buffered),
                    {"tick": state.buffered.isoformat(), "buffered": True},
                )
            )
            previous_open = True
        for request in state.triggers:
            starts.append(
                (
                    f"sched:{schedule.name}:manual:{request}",
                    {"tick": now.isoformat(), "request_id": request},
                )
            )
        for backfill_id, start, end in state.backfills:
            ticks = schedule.ticks(
                state.anchor, start - timedelta(microseconds=1), end, _MAX_BACKFILL
            )
            for tick in ticks:
                if await load_state(self.store, run_id(schedule.name, tick)) is None:
                    starts.append(
                        (
                            run_id(schedule.name, tick),
                            {"tick": tick.isoformat(), "backfill_id": backfill_id},
                        )
                    )
            if not ticks or all(s[1].get("backfill_id") != backfill_id for s in starts):
                records.append(
                    _event("ticked", schedule.name, {"backfill_id": backfill_id, "runs": []})
                )
        if due:
            run, missed = self._catch_up(schedule, due, now)
            if missed:
                records.append(
                    _event(
                        "missed",
                        schedule.name,
                        {
                            "count": len(missed),
                            "first": missed[0].isoformat(),
                            "last": missed[-1].isoformat(),
                        },
                    )
                )
                self.engine.stats.schedule_missed[schedule.name] += len(missed)
                _log.warning(
                    "schedule %s: %d tick(s) missed (%s .. %s)",
                    schedule.name,
                    len(missed),
                    missed[0].isoformat(),
                    missed[-1].isoformat(),
                )
            for tick in run:
                if previous_open and schedule.overlap == "skip":
                    records.append(
                        _event(
                            "skipped",
                            schedule.name,
                            {
                                "tick": tick.isoformat(),
                                "reason": "the previous run is still open",
                                "open_run": state.last_run,
                            },
                        )
                    )
                    self.engine.stats.schedule_skipped[schedule.name] += 1
                elif previous_open and schedule.overlap == "buffer_one":
                    if state.buffered is None and not any(
                        e.type == _TYPE + "buffered" for e in records
                    ):
                        records.append(
                            _event("buffered", schedule.name, {"tick": tick.isoformat()})
                        )
                    else:
                        records.append(
                            _event(
                                "skipped",
                                schedule.name,
                                {"tick": tick.isoformat(), "reason": "one run is already buffered"},
                            )
                        )
                        self.engine.stats.schedule_skipped[schedule.name] += 1
                else:
                    starts.append((run_id(schedule.name, tick), {"tick": tick.isoformat()}))
                    previous_open = True
        if not records and not starts:
            return
        await self._commit(schedule, state, records, starts)

    def _catch_up(
        self, schedule: Schedule, due: list[datetime], now: datetime
    ) -> tuple[list[datetime], list[datetime]]:
        if not due:
            return [], []
        if schedule.catch_up == "none":
            run = [t for t in due[-1:] if now - t <= _NONE_GRACE]
        elif schedule.catch_up == "last":
            run = [t for t in due[-1:] if now - t <= max(schedule.catch_up_window, _NONE_GRACE)]
        else:
            window = max(schedule.catch_up_window, _NONE_GRACE)
            run = [t for t in due if now - t <= window][-schedule.max_catch_up :]
        chosen = set(run)
        return run, [t for t in due if t not in chosen]

    async def _open(self, workflow_id: str | None) -> bool:
        if workflow_id is None or workflow_id.startswith("event:"):
            return False
        state = await load_state(self.store, workflow_id)
        return state is not None and not state.terminal

    async def _commit(
        self,
        schedule: Schedule,
        state: ScheduleState,
        records: list[Event],
        starts: list[tuple[str, dict[str, Any]]],
    ) -> None:
        appends: list[Append] = []
        launches: list[int] = []
        definition = self.engine.definitions.get(schedule.workflow or "")
        if schedule.workflow is not None and definition is None:
            raise ConfigurationError(
                f"schedule {schedule.name!r}: no workflow {schedule.workflow!r} is registered"
            )
        for wid, extra in starts:
            if definition is not None:
                data = self.engine.started_data(definition, wid, schedule.input)
                data["schedule"] = schedule.name
                started = history_event("started", data, wid)
                launches.append(len(appends) + 1)
                appends.append(Append(stream_name(wid), [started], StreamState.NO_STREAM))
                records.append(_event("ticked", schedule.name, {**extra, "runs": [wid]}))
            else:
                body = schedule.input if isinstance(schedule.input, dict) else {}
                event = Event(
                    type=schedule.event or "",
                    source="contexten.schedules",
                    subject=schedule.name,
                    id=str(uuid.uuid5(_NAMESPACE, wid)),
                    data={**body, "schedule": schedule.name, "tick": extra["tick"]},
                )
                appends.append(Append(f"schedule-{schedule.name}", [event]))
                records.append(
                    _event("ticked", schedule.name, {**extra, "runs": [f"event:{event.id}"]})
                )
        results = await self.store.commit(
            [Append(schedule.stream, records, state.version), *appends]
        )
        for wid, _ in starts:
            self.engine.stats.schedule_ticks[schedule.name] += 1
            _log.info("schedule %s: started %s", schedule.name, wid)
        if definition is not None:
            for index in launches:
                result = results[index]
                rec = RecordedEvent(
                    result.first_position,
                    appends[index - 1].stream,
                    result.version,
                    self.engine.clock.now(),
                    appends[index - 1].events[0],
                )
                self.engine.launch_started(definition, rec)


async def _request(store: EventStore, name: str, kind: str, data: dict[str, Any]) -> None:
    stream = SCHEDULE_PREFIX + name
    if not await store.read_stream(stream):
        raise ConfigurationError(f"no schedule {name!r} has run on this store")
    await store.append(stream, [_event(kind, name, data)])


async def request_pause(store: EventStore, name: str, *, paused: bool, at: datetime) -> None:
    """Pause (or resume) schedule ``name``: no tick fires while paused, and the ticks of the
    paused time do not run on resume.

    Raises:
        ConfigurationError: the schedule never ran on this store.
    """
    await _request(store, name, "paused" if paused else "resumed", {"at": at.isoformat()})


async def request_trigger(store: EventStore, name: str) -> str:
    """Ask for one run of schedule ``name`` now (whichever worker polls next starts it);
    returns the request id (the run is ``sched:{name}:manual:{id}``)."""
    request_id = fast_id()
    await _request(store, name, "trigger_requested", {"request_id": request_id})
    return request_id


async def request_backfill(store: EventStore, name: str, start: datetime, end: datetime) -> str:
    """Ask for the runs of every tick of schedule ``name`` in ``[start, end]`` that has none
    (at most 1,000); returns the request id.

    Raises:
        ConfigurationError: ``end`` is before ``start``, or the schedule never ran here.
    """
    if end < start:
        raise ConfigurationError("backfill: the end is before the start")
    request_id = fast_id()
    data = {"request_id": request_id, "start": start.isoformat(), "end": end.isoformat()}
    await _request(store, name, "backfill_requested", data)
    return request_id
