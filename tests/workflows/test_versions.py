"""Changing workflows under running instances: versions side by side, patches, blocked
instances and their migration, and the runs of one instance id."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from contexten.events import Event
from contexten.exceptions import (
    ConfigurationError,
    MigrationRefused,
    NondeterminismError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowNotRegistered,
)
from contexten.workflows import WorkflowEngine, WorkflowStatus, current_step

from .conftest import HANG_GUARD, Env, until, until_status


def echo(tag: str) -> str:
    return tag


def register_v1(engine: WorkflowEngine) -> None:
    @engine.workflow("release", version=1)
    async def release_v1(wf: Any, _: Any) -> str:
        await wf.step(echo, "build", name="build")
        await wf.wait_for("release.approved")
        return str(await wf.step(echo, "v1-publish", name="publish"))


def register_v2(engine: WorkflowEngine) -> None:
    @engine.workflow("release", version=2)
    async def release_v2(wf: Any, _: Any) -> str:
        await wf.step(echo, "compile", name="compile")  # incompatible with v1's histories
        await wf.wait_for("release.approved")
        return str(await wf.step(echo, "v2-publish", name="publish"))


def register_both(engine: WorkflowEngine) -> None:
    register_v1(engine)
    register_v2(engine)


async def test_a_waiting_v1_instance_finishes_on_v1_after_v2_is_deployed(env: Env) -> None:
    engine = await env.engine(register_v1)
    await engine.start_workflow("release", None, workflow_id="r-old")
    await until_status(engine, "r-old", WorkflowStatus.WAITING)

    engine = await env.restart(engine, register_both)  # the deploy: v2 beside v1
    new = await engine.start_workflow("release", None, workflow_id="r-new")
    await until_status(engine, "r-new", WorkflowStatus.WAITING)
    await engine.store.append("approvals", [Event(type="release.approved")])

    assert await engine.get_handle("r-old").result(timeout=HANG_GUARD) == "v1-publish"
    assert await new.result(timeout=HANG_GUARD) == "v2-publish"
    versions = {i.workflow_id: i.version for i in await engine.list_workflows()}
    assert versions == {"r-old": "1", "r-new": "2"}
    assert list(engine.versions("release")) == ["1", "2"]
    assert engine.definitions["release"].version == "2", "new instances start on the newest"


async def test_an_instance_whose_version_is_gone_is_blocked_then_migrated(env: Env) -> None:
    def register_v3(engine: WorkflowEngine) -> None:
        @engine.workflow("release", version=3)
        async def release_v3(wf: Any, _: Any) -> str:
            await wf.step(echo, "build", name="build")  # compatible with v1's history
            await wf.wait_for("release.approved")
            return str(await wf.step(echo, "v3-publish", name="publish"))

    def register_v2_v3(engine: WorkflowEngine) -> None:
        register_v2(engine)
        register_v3(engine)

    engine = await env.engine(register_v1)
    await engine.start_workflow("release", None, workflow_id="r1")
    await until_status(engine, "r1", WorkflowStatus.WAITING)

    engine = await env.restart(engine, register_v2_v3)  # v1 deleted too early
    await until_status(engine, "r1", WorkflowStatus.BLOCKED)
    info = await engine.get_workflow("r1")
    assert info.blocked_reason == "version_not_registered"
    assert info.error is not None
    assert "version 1 is not registered" in info.error["message"]
    assert engine.stats.blocked["release"] == 1

    with pytest.raises(MigrationRefused):  # v2 would supersede the build step: refused
        await engine.migrate_workflow("r1", 2)
    assert (await engine.get_workflow("r1")).status is WorkflowStatus.BLOCKED
    with pytest.raises(WorkflowNotRegistered):
        await engine.migrate_workflow("r1", 7)

    handle = await engine.migrate_workflow("r1", 3)
    await until_status(engine, "r1", WorkflowStatus.WAITING)
    await engine.store.append("approvals", [Event(type="release.approved")])
    assert await handle.result(timeout=HANG_GUARD) == "v3-publish"
    info = await engine.get_workflow("r1")
    assert info.version == "3"
    kinds = [h.kind for h in info.history]
    assert kinds[kinds.index("blocked") :][:2] == ["blocked", "migrated"]
    with pytest.raises(WorkflowError, match="not blocked"):
        await engine.migrate_workflow("r1", 3)


async def test_a_blocked_instance_resumes_when_its_version_is_deployed_again(env: Env) -> None:
    engine = await env.engine(register_v1)
    await engine.start_workflow("release", None, workflow_id="r1")
    await until_status(engine, "r1", WorkflowStatus.WAITING)
    engine = await env.restart(engine, register_v2)
    await until_status(engine, "r1", WorkflowStatus.BLOCKED)

    engine = await env.restart(engine, register_both)  # rolled back: v1 is registered again
    await until_status(engine, "r1", WorkflowStatus.WAITING)
    await engine.store.append("approvals", [Event(type="release.approved")])
    assert await engine.get_handle("r1").result(timeout=HANG_GUARD) == "v1-publish"


async def test_cancelling_a_blocked_instance_says_its_compensations_did_not_run(
    memory_env: Env,
) -> None:
    engine = await memory_env.engine(register_v1)
    await engine.start_workflow("release", None, workflow_id="r1")
    await until_status(engine, "r1", WorkflowStatus.WAITING)
    engine = await memory_env.restart(engine, register_v2)
    await until_status(engine, "r1", WorkflowStatus.BLOCKED)
    assert await engine.cancel_workflow("r1")
    await until_status(engine, "r1", WorkflowStatus.CANCELLED)
    info = await engine.get_workflow("r1")
    assert info.error is not None
    assert "compensations were not run" in info.error["message"]


async def test_a_history_without_a_version_runs_on_version_1_or_the_only_one(
    memory_env: Env,
) -> None:
    engine = await memory_env.engine(lambda e: None, start=False)
    register_v2(engine)
    from contexten.workflows.history import WorkflowState

    legacy = WorkflowState("old", name="release", version="")
    assert engine.definition_for(legacy) is engine.versions("release")["2"]  # the only one
    register_v1(engine)
    assert engine.definition_for(legacy) is engine.versions("release")["1"]
    with pytest.raises(ConfigurationError, match="already registered"):
        register_v1(engine)


def register_patched(engine: WorkflowEngine, *, patched: bool) -> None:
    @engine.workflow("greet")
    async def greet(wf: Any, _: Any) -> str:
        first = await wf.step(echo, "hello", name="hello")
        if patched and wf.patched("add-wave"):
            await wf.step(echo, "wave", name="wave")
        await wf.wait_for("greet.go")
        return str(await wf.step(echo, f"{first}-bye", name="bye"))


async def test_a_patch_keeps_old_histories_on_the_old_path_and_takes_the_new_one(
    env: Env,
) -> None:
    engine = await env.engine(lambda e: register_patched(e, patched=False))
    await engine.start_workflow("greet", None, workflow_id="before")
    await until_status(engine, "before", WorkflowStatus.WAITING)

    engine = await env.restart(engine, lambda e: register_patched(e, patched=True))
    await engine.start_workflow("greet", None, workflow_id="after")
    await until_status(engine, "after", WorkflowStatus.WAITING)
    engine = await env.restart(engine, lambda e: register_patched(e, patched=True))  # replays
    await engine.store.append("go", [Event(type="greet.go")])
    assert await engine.get_handle("before").result(timeout=HANG_GUARD) == "hello-bye"
    assert await engine.get_handle("after").result(timeout=HANG_GUARD) == "hello-bye"

    before = _calls(await engine.get_workflow("before"))
    after = _calls(await engine.get_workflow("after"))
    assert before == [
        "started",
        "hello",
        "wait_started",
        "claimed",
        "claimed",
        "wait_matched",
        "bye",
        "completed",
    ], "the old path, replayed as it was"
    assert after[:4] == ["started", "hello", "patched", "wave"]
    assert after.count("wave") == 1, "the replay after the restart took the recorded path"


def _calls(info: Any) -> list[str]:
    return [h.data["name"] if h.kind == "step_completed" else h.kind for h in info.history]


def register_keyed(engine: WorkflowEngine, policy: str | None = None) -> None:
    @engine.workflow("ship", on="ship.requested", key=lambda e: e.subject, id_reuse=policy)
    async def ship(wf: Any, event: Event) -> dict[str, Any]:
        key = await wf.step(lambda: current_step().idempotency_key, name="key")
        if event.data.get("fail"):
            await wf.step(_fail, name="fail")
        if event.data.get("hold"):
            await wf.wait_for("ship.release")
        return {"tag": event.data["tag"], "key": key}


def _fail() -> None:
    from contexten.exceptions import NonRetryableError

    raise NonRetryableError("no")


def _request(tag: str, **data: Any) -> Event:
    return Event(type="ship.requested", subject="repo", data={"tag": tag, **data})


async def test_a_closed_id_starts_a_new_numbered_linked_run_per_trigger(env: Env) -> None:
    engine = await env.engine(register_keyed)
    await engine.store.append("hooks", [_request("v1.2.0")])
    await until_status(engine, "ship:repo", WorkflowStatus.COMPLETED)
    first = await engine.get_workflow("ship:repo")
    await engine.store.append("hooks", [_request("v1.3.0")])
    await until(lambda: _run_is(engine, "ship:repo", 2, WorkflowStatus.COMPLETED))

    second = await engine.get_workflow("ship:repo")
    assert second.result is not None
    assert first.result is not None
    assert (first.run, second.run) == (1, 2)
    assert second.result["tag"] == "v1.3.0", "not the v1.2.0 run's result"
    assert second.result["key"] != first.result["key"], "new idempotency keys per run"
    assert second.result["key"].startswith("ship:repo#2:")
    assert second.previous_run is not None
    assert (second.previous_run["run"], second.previous_run["status"]) == (1, "completed")
    assert engine.stats.restarted["ship"] == 1

    engine = await env.restart(engine, register_keyed, checkpoint="fresh-tail")
    await engine.store.append("hooks", [Event(type="unrelated.thing")])
    head = await engine.store.head()
    await until(lambda: _checkpoint_at(engine, head))
    assert (await engine.get_workflow("ship:repo")).run == 2, "re-reading the log starts nothing"
    assert engine.stats.ignored == {("ship", "duplicate"): 2}, "and says so: both redelivered"


async def test_a_trigger_while_the_run_is_open_is_absorbed_recorded_and_counted(
    memory_env: Env,
) -> None:
    engine = await memory_env.engine(register_keyed)
    await engine.store.append("hooks", [_request("v1", hold=True)])
    await until_status(engine, "ship:repo", WorkflowStatus.WAITING)
    await engine.store.append("hooks", [_request("v2")])
    await until(lambda: engine.stats.absorbed["ship"] == 1)
    info = await engine.get_workflow("ship:repo")
    (absorbed,) = [h for h in info.history if h.kind == "trigger_absorbed"]
    assert absorbed.data["event_type"] == "ship.requested"
    await engine.store.append("hooks", [Event(type="ship.release")])
    assert (await engine.get_handle("ship:repo").result(timeout=HANG_GUARD))["tag"] == "v1"
    assert (await engine.get_workflow("ship:repo")).run == 1


@pytest.mark.parametrize(
    ("policy", "fail_first", "new_run"),
    [
        ("allow_if_failed", True, True),
        ("allow_if_failed", False, False),
        ("never", True, False),
    ],
)
async def test_id_reuse_policies(
    memory_env: Env, policy: str, fail_first: bool, new_run: bool
) -> None:
    engine = await memory_env.engine(lambda e: register_keyed(e, policy))
    await engine.store.append("hooks", [_request("v1", fail=fail_first)])
    with pytest.raises(WorkflowFailedError) if fail_first else contextlib.nullcontext():
        await engine.get_handle("ship:repo").result(timeout=HANG_GUARD)
    await engine.store.append("hooks", [_request("v2")])
    head = await engine.store.head()
    await until(lambda: _checkpoint_at(engine, head))
    info = await engine.get_workflow("ship:repo")
    assert info.run == (2 if new_run else 1)


async def test_explicit_starts_stay_idempotent_unless_the_policy_says_otherwise(
    memory_env: Env,
) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("once")
        async def once(wf: Any, n: int) -> int:
            return n

        @engine.workflow("again", id_reuse="allow_if_closed")
        async def again(wf: Any, n: int) -> int:
            return n

    engine = await memory_env.engine(setup)
    for name in ("once", "again"):
        assert await (await engine.start_workflow(name, 1, name)).result(HANG_GUARD) == 1
    assert await (await engine.start_workflow("once", 2, "once")).result(HANG_GUARD) == 1
    await engine.start_workflow("again", 2, "again")
    await until(lambda: _run_is(engine, "again", 2, WorkflowStatus.COMPLETED))
    assert (await engine.get_workflow("again")).result == 2
    with pytest.raises(ConfigurationError, match="id_reuse"):
        engine.register(lambda wf, x: x, name="bad", id_reuse="sometimes")


async def _run_is(engine: WorkflowEngine, wid: str, run: int, status: WorkflowStatus) -> bool:
    info = await engine.get_workflow(wid)
    return info.run == run and info.status is status


async def _checkpoint_at(engine: WorkflowEngine, position: int) -> bool:
    return (await engine.store.get_checkpoint(engine.checkpoint) or 0) >= position


async def test_the_replayer_replays_each_history_on_its_own_version(memory_env: Env) -> None:
    from contexten.testing import Replayer

    from . import golden

    engine = await memory_env.engine(golden.register, start=False)

    async def order_v2(wf: Any, order: Any) -> Any:
        return await wf.step(golden.reserve_stock, order, name="renamed")  # breaks v1 histories

    engine.register(order_v2, name="order", version=2)
    outcome = await Replayer(engine).replay_file(golden.HISTORIES / "order-completed.json")
    assert outcome.returned, "the version 1 history replayed on version 1, not the newest"
    with pytest.raises(NondeterminismError):
        await Replayer({"order": order_v2}).replay_file(golden.HISTORIES / "order-completed.json")


async def test_fork_starts_a_linked_instance_on_the_newest_version(memory_env: Env) -> None:
    engine = await memory_env.engine(register_v1)
    await engine.start_workflow("release", None, workflow_id="r1")
    await until_status(engine, "r1", WorkflowStatus.WAITING)
    engine = await memory_env.restart(engine, register_v2)
    await until_status(engine, "r1", WorkflowStatus.BLOCKED)

    handle = await engine.fork_workflow("r1", cancel_old=True)
    assert handle.workflow_id == "r1~fork-1"
    await until_status(engine, "r1", WorkflowStatus.CANCELLED)
    await until_status(engine, "r1~fork-1", WorkflowStatus.WAITING)
    await engine.store.append("approvals", [Event(type="release.approved")])
    assert await handle.result(timeout=HANG_GUARD) == "v2-publish"
    forked = await engine.get_workflow("r1~fork-1")
    assert forked.version == "2"
    assert forked.history[0].data["forked_from"] == {"workflow_id": "r1", "run": 1}
    old = [h for h in (await engine.get_workflow("r1")).history if h.kind == "forked"]
    assert old[0].data["to"] == "r1~fork-1"
    again = await engine.fork_workflow("r1")  # left as it is this time: already ended
    assert again.workflow_id == "r1~fork-2"


async def _recorded(engine: WorkflowEngine, *events: Event) -> list[Any]:
    await engine.store.append("hooks", list(events))
    ids = {e.id for e in events}
    return [r for r in await engine.store.read_all(limit=10_000) if r.event.id in ids]


async def test_a_trigger_that_starts_nothing_is_logged_and_counted_never_silent(
    memory_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    from contexten.observability.app_metrics import instrument_app
    from contexten.observability.metrics import Metrics
    from contexten.testing import create_test_app

    # Not started: the test plays the tails of two engines that race on one id's triggers.
    engine = await memory_env.engine(lambda e: register_keyed(e, "allow_if_failed"), start=False)
    older, newer = await _recorded(engine, _request("v1", hold=True), _request("v2", hold=True))
    await engine.start_workflow("ship", newer.event, "ship:repo", _trigger=newer)  # B first
    caplog.set_level("DEBUG", logger="contexten.workflows")

    await engine.start_workflow("ship", older.event, "ship:repo", _trigger=older)  # A loses
    assert engine.stats.ignored[("ship", "stale")] == 1
    assert any(
        older.event.id in r.getMessage() and "overtaken by a newer one" in r.getMessage()
        for r in caplog.records
    ), "the lost trigger is named in the log"
    await engine.start_workflow("ship", newer.event, "ship:repo", _trigger=newer)  # redelivery
    assert engine.stats.ignored[("ship", "duplicate")] == 1
    info = await engine.get_workflow("ship:repo")
    assert (info.run, info.history[0].data["trigger_event_id"]) == (1, newer.event.id)
    assert [h.kind for h in info.history] == ["started"], "neither was recorded as absorbed"

    # A fresh trigger on a run that closed completed: this policy keeps the id closed.
    await engine.store.append("$wf-ship:repo", [_completed("ship:repo")])
    (later,) = await _recorded(engine, _request("v3"))
    await engine.start_workflow("ship", later.event, "ship:repo", _trigger=later)
    assert engine.stats.ignored[("ship", "id_reuse_policy")] == 1
    assert (await engine.get_workflow("ship:repo")).run == 1

    metrics = Metrics()
    instrument_app(metrics, create_test_app().health, engine.stats)
    await metrics.refresh()
    text = metrics.render().decode()
    for reason in ("stale", "duplicate", "id_reuse_policy"):
        line = f'contexten_workflow_triggers_ignored_total{{reason="{reason}",workflow="ship"}} 1.0'
        assert line in text


async def test_a_trigger_whose_open_run_closes_while_absorbing_starts_the_next_run(
    memory_env: Env,
) -> None:
    engine = await memory_env.engine(register_keyed, start=False)
    first, second = await _recorded(engine, _request("v1", hold=True), _request("v2"))
    await engine.start_workflow("ship", first.event, "ship:repo", _trigger=first)
    open_run = await engine.get_workflow("ship:repo")
    assert open_run.status is WorkflowStatus.RUNNING
    from contexten.workflows.admin import load_state

    stale_view = await load_state(engine.store, "ship:repo")
    assert stale_view is not None
    await engine.store.append("$wf-ship:repo", [_completed("ship:repo")])  # closes meanwhile

    assert not await engine._absorb_trigger(stale_view, second), "not absorbed by a closed run"
    await engine.start_workflow("ship", second.event, "ship:repo", _trigger=second)
    info = await engine.get_workflow("ship:repo")
    assert (info.run, info.history[-1].data["trigger_event_id"]) == (2, second.event.id)
    assert engine.stats.absorbed["ship"] == 0
    assert sum(engine.stats.ignored.values()) == 0


def _completed(workflow_id: str) -> Event:
    from contexten.workflows.history import history_event

    return history_event("completed", {"result": None}, workflow_id)
