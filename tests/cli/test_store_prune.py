"""``contexten store prune`` on SQLite and PostgreSQL: dry run, apply, what readers see."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from contexten import App, Event, HandlerContext, RetryPolicy
from contexten.cli import cli
from contexten.store import create_store

from ._audit import audit_events


def _populate(url: str) -> None:
    """An issue event (handled), a push (its handler fails: an open dead letter), a Linear
    event (no rule matches it)."""
    app = App(store=url)

    @app.on("github.**", name="fragile", retry=RetryPolicy(initial_interval=0, maximum_attempts=2))
    async def fragile(event: Event, ctx: HandlerContext) -> None:
        if event.type == "github.push":
            raise ValueError("cannot handle pushes")

    async def main() -> None:
        async with app:
            for event in (
                Event(type="github.issues.opened", source="github", subject="a/b#1", data=_big()),
                Event(type="github.push", source="github", subject="a/b", data=_big()),
                Event(type="linear.issue.updated", source="linear", subject="ENG-1", data=_big()),
            ):
                await app.publish(event, dedup_key=f"delivery-{event.type}")
            await app.drain(timeout=30)

    asyncio.run(main())


_BODY = os.urandom(10_000).hex()  # incompressible: PostgreSQL's TOAST cannot shrink it


def _big() -> dict[str, Any]:
    return {"title": "payload", "body": _BODY}


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _events(url: str) -> dict[str, dict[str, Any]]:
    out = _run("events", "list", "--store", url, "--json", "--limit", "100")
    return {e["type"]: e for e in map(json.loads, out.splitlines())}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'prune.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"ctx_prune_{uuid.uuid4().hex[:10]}"
    yield f"{base}?schema={schema}"

    async def drop() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_prune_is_dry_by_default_then_drops_data_but_spares_open_dead_letters(
    store_url: str,
) -> None:
    _populate(store_url)
    time.sleep(1.2)  # every event and key is now older than the 1 s rules below
    args = ("store", "prune", "--store", store_url, "--rule", "github.**=1s")
    before = _events(store_url)

    dry = json.loads(_run(*args, "--dedup-window", "1s", "--json"))
    assert dry["dry_run"] is True
    assert dry["events"] == {"github.**": 1}  # the issue; the push is an open dead letter's
    assert dry["protected"] == 1
    assert dry["dedup_keys"] >= 3
    assert _events(store_url) == before
    assert audit_events(store_url) == []  # a dry run changes nothing, so records nothing

    text = _run(*args, "--dedup-window", "1s", "--apply")
    assert "data of github.** events older than 0:00:01: dropped 1" in text
    assert "kept for open dead letters: 1" in text
    after = _events(store_url)
    issue = after.pop("github.issues.opened")
    assert issue.pop("pruned")["rule"] == "github.**"
    assert issue == before.pop("github.issues.opened")  # the envelope is whole
    assert after == before  # the push (open dead letter) and the Linear event untouched
    shown = json.loads(_run("events", "show", "--store", store_url, issue["id"]))
    assert shown["data"] == {"$pruned": shown["pruned"]}
    assert shown["pruned"]["bytes"] > 20_000
    assert "[data pruned]" in _run("events", "list", "--store", store_url)

    [record] = audit_events(store_url)
    assert record["type"] == "contexten.audit.store.prune"
    assert record["outcome"].startswith("pruned ")
    assert "github.**" in record["text"]

    # Idempotent; and the open letter's event is still whole for its redrive.
    again = json.loads(_run(*args, "--apply", "--json"))
    assert (again["events"], again["dedup_keys"]) == ({}, 0)
    letters = [
        json.loads(x) for x in _run("dlq", "list", "--store", store_url, "--json").splitlines()
    ]
    assert [x["event_type"] for x in letters] == ["github.push"]

    async def stored_push() -> dict[str, Any]:
        async with create_store(store_url) as store:
            record = await store.get_event(letters[0]["event_id"])
            assert record is not None
            return record.event.data

    assert asyncio.run(stored_push()) == _big()


def test_prune_vacuum_gives_space_back(store_url: str) -> None:
    _populate(store_url)
    time.sleep(1.2)
    report = json.loads(
        _run(
            "store",
            "prune",
            "--store",
            store_url,
            "--rule",
            "**=1s",
            "--apply",
            "--vacuum",
            "--json",
        )
    )
    assert report["pruned_events"] >= 2
    assert report["size_after"] < report["size_before"]


def test_bad_rules_and_flags_are_clear_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for args, message in (
        (["--rule", "github.**"], "PATTERN=AGE"),
        (["--rule", "github.**=soon"], "bad age"),
        (["--rule", "Bad Pattern=1d"], "retention rule"),
        (["--vacuum"], "--vacuum needs --apply"),
    ):
        result = CliRunner().invoke(cli, ["store", "prune", "--store", url, *args])
        assert result.exit_code != 0
        assert message in result.output


def test_prune_takes_the_apps_policy_and_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    _populate(url)
    (tmp_path / "myapp.py").write_text(
        "from contexten import App\n"
        f"app = App({url!r})\n"
        "app.retention({'linear.**': '1s'}, dedup_window='30d')\n"
    )
    time.sleep(1.2)
    result = CliRunner(env={"CONTEXTEN_STORE_URL": None}).invoke(
        cli, ["store", "prune", "--app", f"{tmp_path / 'myapp.py'}:app", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["events"] == {"linear.**": 1}
    assert report["dedup_keys"] == 0  # nothing is 30 days old
    assert report["dry_run"] is True
