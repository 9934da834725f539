"""The chaos test's history checker: what the ledger tables must show after the run.

Inputs are plain records (read from the ledger tables), so the checker can be tested with
histories that break each rule (``test_history.py``).

Rules:

* **Every event handled**, by every handler.
* **Order per key, per handler**: the first run of each event, in ledger order, follows the
  log order within each key (a redelivery after a failover repeats a suffix, which is fine).
* **Duplicates only for events in flight at a kill**: a run of an event that is not its last
  run is explained only if its worker was killed (``kill -9``) and the event was past its
  partition's checkpoint at that moment, or (PostgreSQL restart) the same worker ran it again
  in a later attempt after a failure reported during the restart window, the commit having
  landed but its acknowledgement lost.
* **Every workflow finished, each step's effect once**: every instance completed, each of its
  steps has exactly one effect, and all the runs of a step used the same idempotency key
  (extra runs explained as above).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Handled", "History", "Kill", "StepRun", "check"]


@dataclass(frozen=True, slots=True)
class Handled:
    """One handler run: ledger ``id`` orders the runs (one key's runs never overlap)."""

    id: int
    handler: str
    n: int
    key: str
    pid: int
    attempt: int
    ts: float


@dataclass(frozen=True, slots=True)
class StepRun:
    """One run of a workflow step and the idempotency key it used."""

    id: int
    wf: str
    step: int
    idem: str
    pid: int
    ts: float


@dataclass(frozen=True, slots=True)
class Kill:
    """A ``kill -9`` of ``pid``; ``checkpoints`` are its partitions' saved positions then:
    ``(group, partition) -> position``."""

    pid: int
    checkpoints: Mapping[tuple[str, int], int]


@dataclass
class History:
    """Everything the checker looks at."""

    events: int
    handlers: Sequence[str]
    position: Mapping[int, int]
    """Event number -> its log position."""
    partition: Mapping[tuple[str, int], int]
    """(handler, event number) -> its partition in the handler's group."""
    handled: Sequence[Handled]
    kills: Sequence[Kill] = ()
    restart_window: tuple[float, float] | None = None
    """When PostgreSQL was down (wall clock seconds), if it was restarted."""
    workflows: Mapping[str, str] = field(default_factory=dict)
    """Workflow id -> status."""
    steps: int = 0
    step_runs: Sequence[StepRun] = ()
    effects: Sequence[tuple[str, int, str]] = ()
    """(workflow id, step, idempotency key) per stored effect."""
    t0: float = 0.0
    """Wall clock seconds the run started at (times in messages are relative to it)."""


def _in_window(ts: float, window: tuple[float, float] | None, slack: float = 1.0) -> bool:
    return window is not None and window[0] - slack <= ts <= window[1] + slack


def check(h: History) -> list[str]:
    """Every rule the history breaks, as readable lines (empty: it holds)."""
    problems: list[str] = []
    killed: dict[int, Kill] = {k.pid: k for k in h.kills}
    runs: dict[tuple[str, int], list[Handled]] = defaultdict(list)
    for r in sorted(h.handled, key=lambda r: r.id):
        runs[(r.handler, r.n)].append(r)
    for handler in h.handlers:
        missing = [n for n in range(h.events) if (handler, n) not in runs]
        if missing:
            problems.append(f"{handler}: {len(missing)} events never handled, e.g. {missing[:5]}")
        first_by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for n in range(h.events):
            rs = runs.get((handler, n))
            if rs:
                first_by_key[rs[0].key].append((rs[0].id, n))
        for key, firsts in sorted(first_by_key.items()):
            order = [n for _, n in sorted(firsts)]
            if order != sorted(order):
                bad = next(i for i in range(1, len(order)) if order[i] < order[i - 1])
                problems.append(
                    f"{handler}: key {key} handled out of order: {order[bad - 1]} before "
                    f"{order[bad]}"
                )
        for n in range(h.events):
            rs = runs.get((handler, n), [])
            group = f"sub:chaos.{handler}"
            part = h.partition.get((handler, n))
            for i, r in enumerate(rs[:-1]):
                if _explained(r, rs[i + 1 :], killed, h, (group, part), h.position.get(n)):
                    continue
                runs_text = ", ".join(
                    f"pid {o.pid} at {o.ts - h.t0:.2f}s try {o.attempt}" for o in rs
                )
                problems.append(
                    f"{handler}: event {n} (position {h.position.get(n)}, partition {part}) "
                    f"handled {len(rs)} times ({runs_text}); the run by pid {r.pid} is not "
                    "explained by a kill or the restart"
                )
                break
    problems.extend(_check_workflows(h, killed))
    return problems


def _explained(
    r: Handled | StepRun,
    later: Iterable[Handled | StepRun],
    killed: Mapping[int, Kill],
    h: History,
    where: tuple[str, int | None] | None,
    position: int | None,
) -> bool:
    kill = killed.get(r.pid)
    if kill is not None:
        if where is None or where[1] is None or position is None:
            return True  # a workflow step: any run in a killed worker was in flight
        saved = kill.checkpoints.get((where[0], where[1]))
        if saved is None or position > saved:
            return True
    if _in_window(r.ts, h.restart_window):
        return any(
            o.pid == r.pid and (not isinstance(o, Handled) or o.attempt > r.attempt)  # type: ignore[union-attr]
            for o in later
        )
    return False


def _check_workflows(h: History, killed: Mapping[int, Kill]) -> list[str]:
    problems = []
    unfinished = {wf: s for wf, s in h.workflows.items() if s != "completed"}
    if unfinished:
        sample = sorted(unfinished.items())[:5]
        problems.append(f"{len(unfinished)} workflows not completed, e.g. {sample}")
    effects: dict[tuple[str, int], list[str]] = defaultdict(list)
    for wf, step, idem in h.effects:
        effects[(wf, step)].append(idem)
    runs: dict[tuple[str, int], list[StepRun]] = defaultdict(list)
    for r in sorted(h.step_runs, key=lambda r: r.id):
        runs[(r.wf, r.step)].append(r)
    for wf in sorted(h.workflows):
        for step in range(1, h.steps + 1):
            got = effects.get((wf, step), [])
            if len(got) != 1:
                problems.append(f"workflow {wf} step {step}: {len(got)} effects, not 1")
            rs = runs.get((wf, step), [])
            keys = {r.idem for r in rs}
            if len(keys) > 1:
                problems.append(f"workflow {wf} step {step}: idempotency key changed: {keys}")
            for i, r in enumerate(rs[:-1]):
                if not _explained(r, rs[i + 1 :], killed, h, None, None):
                    problems.append(
                        f"workflow {wf} step {step} ran {len(rs)} times; the run by pid "
                        f"{r.pid} is not explained by a kill or the restart"
                    )
                    break
    extra = {wf for wf, _ in effects} - set(h.workflows)
    if extra:
        problems.append(f"effects of unknown workflows: {sorted(extra)[:5]}")
    return problems
