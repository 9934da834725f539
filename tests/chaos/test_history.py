"""The chaos history checker rejects each kind of broken history (so the chaos test can fail)."""

from __future__ import annotations

from ._history import Handled, History, Kill, StepRun, check

GROUP = "sub:chaos.audit"


def history(handled: list[Handled], **more: object) -> History:
    base: dict[str, object] = {
        "events": 3,
        "handlers": ("audit",),
        "position": {0: 10, 1: 11, 2: 12},
        "partition": {("audit", n): 0 for n in range(3)},
        "handled": handled,
    }
    base.update(more)
    return History(**base)  # type: ignore[arg-type]


def run(id: int, n: int, pid: int = 1, attempt: int = 1, ts: float = 0.0) -> Handled:
    return Handled(id, "audit", n, "k", pid, attempt, ts)


def test_a_clean_history_passes() -> None:
    assert check(history([run(1, 0), run(2, 1), run(3, 2)])) == []


def test_a_missing_event_is_reported() -> None:
    problems = check(history([run(1, 0), run(2, 2)]))
    assert any("1 events never handled" in p for p in problems)


def test_out_of_order_per_key_is_reported() -> None:
    problems = check(history([run(1, 0), run(2, 2), run(3, 1)]))
    assert any("out of order" in p for p in problems)


def test_a_duplicate_from_a_live_worker_is_reported() -> None:
    problems = check(history([run(1, 0), run(2, 1), run(3, 1, pid=2), run(4, 2, pid=2)]))
    assert any("event 1" in p and "not explained" in p for p in problems)


def test_a_duplicate_from_a_kill_past_the_checkpoint_is_explained() -> None:
    handled = [run(1, 0), run(2, 1), run(3, 1, pid=2), run(4, 2, pid=2)]
    assert check(history(handled, kills=[Kill(1, {(GROUP, 0): 10})])) == []


def test_a_duplicate_of_an_event_the_killed_worker_had_saved_is_reported() -> None:
    handled = [run(1, 0), run(2, 1), run(3, 1, pid=2), run(4, 2, pid=2)]
    problems = check(history(handled, kills=[Kill(1, {(GROUP, 0): 11})]))
    assert any("event 1" in p for p in problems)


def test_a_retry_after_a_lost_acknowledgement_in_the_restart_is_explained() -> None:
    handled = [run(1, 0), run(2, 1, ts=5.0), run(3, 1, attempt=2, ts=6.0), run(4, 2)]
    assert check(history(handled, restart_window=(5.5, 6.0))) == []
    assert check(history(handled, restart_window=(50.0, 51.0)))


def test_workflows_each_step_once_with_one_key() -> None:
    base = {"workflows": {"w": "completed"}, "steps": 2}
    runs = [StepRun(1, "w", 1, "w:1", 1, 0.0), StepRun(2, "w", 2, "w:2", 1, 0.0)]
    effects = [("w", 1, "w:1"), ("w", 2, "w:2")]
    clean = [run(1, 0), run(2, 1), run(3, 2)]
    assert check(history(clean, step_runs=runs, effects=effects, **base)) == []
    problems = check(history(clean, step_runs=runs, effects=effects[:1], **base))
    assert any("step 2: 0 effects" in p for p in problems)
    rerun = [*runs, StepRun(3, "w", 2, "w:2-other", 2, 0.0)]
    problems = check(history(clean, step_runs=rerun, effects=effects, **base))
    assert any("idempotency key changed" in p for p in problems)
    assert any("ran 2 times" in p for p in problems)
    problems = check(
        history(clean, step_runs=runs, effects=effects, workflows={"w": "failed"}, steps=2)
    )
    assert any("not completed" in p for p in problems)
