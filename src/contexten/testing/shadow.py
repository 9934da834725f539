"""Shadow replay: what would new code have done with the webhooks we actually received?

:func:`shadow_replay` reads the webhooks recorded in a store between two times, loads the new
app inside :func:`~contexten.app.pinned_apps` (so it runs on a fresh in-memory store, a
virtual clock and the in-process sandbox for every platform call, with every platform
credential removed from the environment) and re-feeds them in order, moving the virtual
clock to each webhook's recorded time so timers and timeouts fall where they did. It then
compares what the new app did with what the recorded store shows happened in the same
window, as counts per (kind, name, work item):

=================  =====================================================================
kind               name
=================  =====================================================================
``workflow``       ``{workflow}:{started|completed|failed|compensated|cancelled|blocked}``
``action``         the action's event type (``contexten.action.github.create_issue_comment``)
``dead_letter``    the subscription whose handler kept failing
=================  =====================================================================

A work item is the event's ``correlation_id`` (its subject when it has none). Before each
webhook is re-fed, the sandbox is seeded with what it is about, on every platform (GitHub,
Linear, Slack, Codegen), and the ids the real platforms gave the recorded code's objects are
reserved for the new code's same calls (see :mod:`contexten.testing._shadow_seed`), so code
that acts on Linear or Slack behaves here as it did for real. Webhooks that the recording
or the new app recognise as echoes of our own bot are not re-fed; the new app's own actions
change the sandbox, which records the webhooks a platform would send for them and sends
none. Recorded outcomes are those recorded in ``[start, end + settle]``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from contexten.app import pinned_apps
from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError
from contexten.store.base import SYSTEM_STREAM_PREFIX, EventStore, RecordedEvent
from contexten.store.memory import MemoryEventStore
from contexten.testing._shadow_seed import ShadowSeeder
from contexten.testing.clock import VirtualClock
from contexten.testing.sandbox import Sandbox, SandboxConfig

__all__ = ["ShadowDifference", "ShadowReport", "shadow_replay"]

_WEBHOOK_PREFIXES = ("github.", "linear.", "slack.", "codegen.")
_SECRET_SUFFIXES = ("_TOKEN", "_SECRET", "_KEY", "_API_KEY")
_PAGE = 1000
_NEVER = 10.0**9
Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ShadowDifference:
    """One (kind, name, work item) whose count differs between the recording and the shadow.

    Attributes:
        kind: ``workflow``, ``action`` or ``dead_letter``.
        name: what (see the module docstring).
        work_item: the correlation id (or subject).
        recorded: how often the recorded store shows it.
        shadow: how often the new code did it.
    """

    kind: str
    name: str
    work_item: str
    recorded: int
    shadow: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind,
            "name": self.name,
            "work_item": self.work_item,
            "recorded": self.recorded,
            "shadow": self.shadow,
        }


@dataclass(slots=True)
class ShadowReport:
    """What :func:`shadow_replay` found.

    Attributes:
        webhooks: recorded webhooks re-fed.
        echoes_skipped: recorded echoes of our own actions, not re-fed.
        differences: every (kind, name, work item) whose counts differ.
        sandbox_outbox: webhooks the sandbox would have sent for the new code's platform
            changes (recorded, never sent).
    """

    webhooks: int = 0
    echoes_skipped: int = 0
    differences: list[ShadowDifference] = field(default_factory=list)
    sandbox_outbox: int = 0

    @property
    def same(self) -> bool:
        """True when the new code did exactly what was recorded."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "same": self.same,
            "webhooks": self.webhooks,
            "echoes_skipped": self.echoes_skipped,
            "sandbox_outbox": self.sandbox_outbox,
            "differences": [d.to_dict() for d in self.differences],
        }


def _work_item(event: Event) -> str:
    return event.correlation_id or event.subject or "-"


def _outcomes(
    records: list[RecordedEvent], window: tuple[datetime, datetime] | None
) -> Counter[Key]:
    """What the events show happened (within ``window`` of recording times), per key."""
    by_id = {r.event.id: r.event for r in records}
    out: Counter[Key] = Counter()
    for rec in records:
        event = rec.event
        if window is not None and not window[0] <= rec.recorded_at <= window[1]:
            continue
        if event.type.startswith("contexten.action."):
            out[("action", event.type, _work_item(event))] += 1
        elif event.type == "contexten.dead_letter.parked":
            cause = by_id.get(str(event.data.get("event_id")))
            item = _work_item(cause) if cause is not None else "-"
            out[("dead_letter", str(event.data.get("subscription", "?")), item)] += 1
        elif event.type == "contexten.workflow.started" and rec.stream.startswith("$wf-"):
            data = event.data
            trigger = data.get("input") if data.get("input_is_event") else None
            work = trigger.get("correlation_id") or trigger.get("subject") if trigger else None
            out[("workflow", f"{data.get('name', '?')}:started", str(work or "-"))] += 1
        elif event.type.startswith("contexten.workflow.") and not rec.stream.startswith(
            SYSTEM_STREAM_PREFIX
        ):
            status = event.type.rsplit(".", 1)[-1]
            out[("workflow", f"{event.data.get('name', '?')}:{status}", _work_item(event))] += 1
    return out


async def _read_all(store: EventStore) -> list[RecordedEvent]:
    records: list[RecordedEvent] = []
    position = 0
    while True:
        page = await store.read_all(after=position, limit=_PAGE)
        if not page:
            return records
        records.extend(page)
        position = page[-1].position


@contextmanager
def _no_credentials() -> Iterator[None]:
    """Remove every platform credential from the environment for the block."""
    saved = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("CONTEXTEN_") and k.endswith(_SECRET_SUFFIXES)
    }
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


async def shadow_replay(
    recorded: EventStore,
    load: Callable[[], Any],
    start: datetime,
    end: datetime,
    *,
    progress: Callable[[int, int], None] | None = None,
    settle: timedelta = timedelta(minutes=1),
) -> ShadowReport:
    """Re-feed the webhooks ``recorded`` holds for ``[start, end]`` into the app ``load()``
    builds, isolated, and compare (see the module docstring).

    Args:
        recorded: the store that recorded the webhooks and what the old code did.
        load: builds the new :class:`~contexten.App` (``lambda: load_app("new.py:app")``);
            called inside the isolation, so the App it builds is pinned to it.
        start: the window's start.
        end: the window's end.
        progress: called with (webhooks fed, webhooks in the window).
        settle: virtual time the new app gets after the last webhook to finish reacting.

    Raises:
        ConfigurationError: ``load()`` did not return an App built inside the isolation.
    """
    from contexten.app import App

    records = await _read_all(recorded)
    report = ShadowReport()
    shadow_store = MemoryEventStore()
    clock = VirtualClock(start)
    # Agent runs never progress on their own here: the recorded run events say how they went.
    sandbox = Sandbox(SandboxConfig(webhook_url=None, agent_run_start_after=_NEVER))
    seeder = ShadowSeeder(sandbox, records)
    registry = sandbox.clients(clock=clock)
    with _no_credentials(), pinned_apps(shadow_store, clock, registry):
        app = load()
        if not isinstance(app, App):
            raise ConfigurationError(f"shadow replay needs an App, got {type(app).__name__}")
        if app.store is not shadow_store:
            raise ConfigurationError(
                "shadow replay needs an App built inside it, but load() returned one built "
                "before (its module was imported already, or it was given another store); "
                "run the shadow replay in a process of its own"
            )
    window = [
        r
        for r in records
        if start <= r.recorded_at <= end and r.event.type.startswith(_WEBHOOK_PREFIXES)
    ]
    try:
        async with app:
            for n, rec in enumerate(window, 1):
                if seeder.recorded_echo(rec.event) or app.is_echo(rec.event):
                    report.echoes_skipped += 1
                    continue
                await clock.advance_to(max(rec.recorded_at, clock.now()))
                seeder.seed(rec.event)
                await app.publish(rec.event, dedup_key=rec.event.delivery_id)
                await app.drain(timeout=60)
                report.webhooks += 1
                if progress is not None:
                    progress(n, len(window))
            await clock.advance_to(max(end, clock.now()) + settle)
            await app.drain(timeout=60)
            shadow_records = await _read_all(shadow_store)
    finally:
        await clock.aclose()
    report.sandbox_outbox = len(sandbox.outbox)
    old = _outcomes(records, (start, end + settle))
    new = _outcomes(shadow_records, None)  # everything in the shadow store is the shadow's
    for key in sorted(set(old) | set(new)):
        if old[key] != new[key]:
            kind, name, item = key
            report.differences.append(ShadowDifference(kind, name, item, old[key], new[key]))
    return report


def load_reference(reference: str) -> Callable[[], Any]:
    """A loader for :func:`shadow_replay` from an ``--app`` reference."""
    from contexten.ingress.loader import load_app

    return lambda: load_app(reference, cwd=Path.cwd())
