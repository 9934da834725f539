"""``contexten workers``: live workers, their partitions, lag and heartbeat age."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from contexten import Event
from contexten.cli import cli
from contexten.store import Append, create_store
from contexten.store.base import LeaseCheckpoint


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_workers_lists_live_workers_partitions_and_lag(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def setup() -> None:
        async with create_store(url) as store:
            await store.ensure_partitions("sub:triage", 4, position=0)
            await store.heartbeat("host/1/a", ttl=60, groups=["sub:triage"], meta="pid 1")
            await store.heartbeat("host/2/b", ttl=60, groups=["sub:triage"], meta="pid 2")
            await store.heartbeat("host/3/gone", ttl=0.01, groups=["sub:triage"])
            await store.claim_partitions("sub:triage", "host/1/a", limit=3, ttl=60)
            [lease] = await store.claim_partitions("sub:triage", "host/2/b", limit=1, ttl=60)
            await store.commit(
                [Append("s", [Event(type="t.x", source="t") for _ in range(5)])],
                lease=LeaseCheckpoint("sub:triage", lease.partition, "host/2/b", lease.epoch, 5),
            )
            # a projection's lease: listed with its worker, not as a subscription
            await store.ensure_partitions("projection:workflows", 1, position=0)
            await store.claim_partitions("projection:workflows", "host/2/b", limit=1, ttl=60)
            await asyncio.sleep(0.05)

    asyncio.run(setup())
    report = json.loads(run("workers", "--store", url, "--json"))
    assert report["head"] == 5
    workers = {w["worker_id"]: w for w in report["workers"]}
    assert set(workers) == {"host/1/a", "host/2/b"}  # the expired one is not listed
    assert workers["host/1/a"]["partitions"] == {"sub:triage": 3}
    assert workers["host/1/a"]["lag"] == {"sub:triage": 5}
    assert workers["host/2/b"]["lag"] == {"sub:triage": 0}
    assert workers["host/2/b"]["heartbeat_age"] >= 0
    assert workers["host/2/b"]["projections"] == ["workflows"]
    assert workers["host/2/b"]["partitions"] == {"sub:triage": 1}
    assert workers["host/1/a"]["projections"] == []
    assert report["subscriptions"] == [
        {"subscription": "triage", "partitions": 4, "held": 4, "checkpoint": 0, "lag": 5}
    ]
    text = run("workers", "--store", url)
    assert "host/1/a" in text
    assert "triage: 3 (lag 5)" in text
    assert "partitions 4/4 held" in text
    assert "projections: workflows" in text
