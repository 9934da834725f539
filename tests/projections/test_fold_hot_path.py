"""The pieces of the fold that run once per event: each shortcut gives what the long way
gives (time keys, checked rows, which projections see an event, the events index's type
counts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contexten.events.envelope import Event
from contexten.projections import base
from contexten.projections.base import Projection, ProjectionBatch, Table, time_key
from contexten.projections.events import EVENT_TYPES, EventsProjection
from contexten.projections.memory import MemoryReadModels
from contexten.projections.runner import ProjectionRunner
from contexten.projections.sqlite import SqliteReadModels
from contexten.store.base import RecordedEvent
from contexten.store.memory import MemoryEventStore
from contexten.store.sqlite import SqliteEventStore


def _strftime_key(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_time_keys_match_the_strftime_form_in_any_order_and_zone() -> None:
    now = datetime(2026, 12, 5, 0, 12, 10, 123456, tzinfo=UTC)
    plus3 = timezone(timedelta(hours=3))
    values = [
        now,
        now,  # the memo
        now.astimezone(plus3),  # the same instant elsewhere: the same key
        now + timedelta(microseconds=1),
        now,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 5, tzinfo=plus3),
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7))),
    ]
    for value in values:
        assert time_key(value) == _strftime_key(value)
    # Fixed width even where strftime's %Y is not (years before 1000).
    assert time_key(datetime(999, 1, 1, tzinfo=UTC)) == "0999-01-01T00:00:00.000000Z"


TABLE = Table(
    "hot_rows",
    {"id": "text", "n": "int", "at": "time"},
    key=("id",),
)


def test_a_full_row_in_column_order_is_checked_like_any_other() -> None:
    at = datetime(2026, 12, 5, 1, tzinfo=timezone(timedelta(hours=1)))
    full = TABLE.check_row({"id": "a", "n": 1, "at": at})
    reordered = TABLE.check_row({"n": 1, "at": at, "id": "a"})
    partial = TABLE.check_row({"id": "a"})
    assert full == reordered == {"id": "a", "n": 1, "at": datetime(2026, 12, 5, tzinfo=UTC)}
    assert list(full) == list(reordered) == ["id", "n", "at"]
    assert partial == {"id": "a", "n": None, "at": None}
    with pytest.raises(ValueError, match="key column"):
        TABLE.check_row({"id": None, "n": 1, "at": at})
    with pytest.raises(ValueError, match="aware datetime"):
        TABLE.check_row({"id": "a", "n": 1, "at": datetime(2026, 12, 5)})
    with pytest.raises(ValueError, match="no column"):
        TABLE.check_row({"id": "a", "n": 1, "at": at, "x": 2})


class _Pushes(Projection):
    name = "hot_pushes"
    tables = (TABLE,)
    patterns = ("github.push", "linear.**")

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        pass


def _record(kind: str, position: int = 1) -> RecordedEvent:
    return RecordedEvent(position, "s", position, datetime.now(UTC), Event(type=kind))


def test_handles_remembers_its_answer_per_type_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "_HANDLES_MEMO", 4)
    projection = _Pushes()
    kinds = ["github.push", "github.issues", "linear.issue.create", "slack.message"] * 3
    kinds += [f"made.up.{i}" for i in range(10)] + ["github.push", "linear.x"]
    for kind in kinds:
        expected = kind == "github.push" or kind.startswith("linear.")
        assert projection.handles(_record(kind)) is expected
    assert len(projection.__dict__["_handles_memo"]) <= 4


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_event_type_counts_add_up_across_batches(kind: str, tmp_path: Path) -> None:
    store: Any
    if kind == "memory":
        store = MemoryEventStore()
        models: Any = MemoryReadModels()
    else:
        url = f"sqlite:///{tmp_path / 'c.db'}"
        store, models = SqliteEventStore(url), SqliteReadModels(url)
    types = ["github.push", "linear.issue.create", "github.push"] * 40 + ["slack.message"]
    async with store:
        await models.open()
        try:
            runner = ProjectionRunner(store, models, EventsProjection(), batch_size=7)
            await runner.prepare()
            for i, t in enumerate(types[:50]):
                await store.append(f"s-{i}", [Event(type=t)])
            await runner.catch_up()
            for i, t in enumerate(types[50:], 50):
                await store.append(f"s-{i}", [Event(type=t)])
            await runner.catch_up()
            rows = {r["type"]: r for r in await models.query(EVENT_TYPES, base.Query())}
        finally:
            await models.close()
    assert {t: r["n"] for t, r in rows.items()} == {
        "github.push": 80,
        "linear.issue.create": 40,
        "slack.message": 1,
    }
    assert rows["slack.message"]["last_position"] == len(types)
    assert rows["github.push"]["last_position"] == len(types) - 1
