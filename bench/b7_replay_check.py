"""B7: ``replay check`` over 10,000 stored workflow histories on SQLite (target: under 10 s).

Writes N instance histories into a fresh SQLite file (half open, waiting for an approval
after two steps; half completed after three), then times :func:`check_replays` against the
same code (no divergence: every history is replayed to its end) and against a breaking
change (every history diverges at call 1).

    .venv/bin/python bench/b7_replay_check.py --histories 10000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from contexten.events import Event
from contexten.store import create_store
from contexten.store.base import Append, StreamState
from contexten.workflows import WorkflowEngine
from contexten.workflows.history import history_event, stream_name
from contexten.workflows.replay_check import check_replays


def _history(wid: str, done: bool) -> list[Event]:
    events = [
        history_event(
            "started",
            {"workflow_id": wid, "name": "release", "version": "1", "input": {"n": wid}},
            wid,
        ),
        history_event("step_completed", {"seq": 1, "name": "build", "result": "a"}, wid),
        history_event("step_completed", {"seq": 2, "name": "test", "result": "b"}, wid),
        history_event("wait_started", {"seq": 3, "pattern": "release.approved"}, wid),
    ]
    if done:
        approval = {"id": f"ap-{wid}", "type": "release.approved", "source": "bench"}
        events += [
            history_event("wait_matched", {"seq": 3, "event": approval, "position": 1}, wid),
            history_event("step_completed", {"seq": 4, "name": "publish", "result": "c"}, wid),
            history_event("completed", {"result": "c"}, wid),
        ]
    return events


def _engine(store: Any, first: str) -> WorkflowEngine:
    engine = WorkflowEngine(store)

    @engine.workflow("release")
    async def release(wf: Any, _: Any) -> Any:
        await wf.step(lambda: "a", name=first)
        await wf.step(lambda: "b", name="test")
        await wf.wait_for("release.approved")
        return await wf.step(lambda: "c", name="publish")

    return engine


async def main(histories: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = create_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await store.open()
        for start in range(0, histories, 500):
            await store.commit(
                [
                    Append(
                        stream_name(f"r{i}"), _history(f"r{i}", i % 2 == 0), StreamState.NO_STREAM
                    )
                    for i in range(start, min(start + 500, histories))
                ]
            )
        for label, first in (("same code", "build"), ("breaking change", "compile")):
            began = time.perf_counter()
            report = await check_replays(store, _engine(store, first))
            took = time.perf_counter() - began
            print(
                f"{label:16} {report.checked:6} histories in {took:5.2f} s "
                f"({report.checked / took:,.0f}/s), {len(report.divergences)} divergences, "
                f"{len(report.breaking)} breaking"
            )
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--histories", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().histories))
