"""The ``contexten events`` and ``contexten dlq`` commands against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from contexten import App, Event, HandlerContext, RetryPolicy
from contexten.cli import cli

from ._audit import audit_events


def _populate(url: str) -> None:
    """Store three events; the handler fails on one of them, which ends up dead-lettered."""
    app = App(store=url)

    @app.on("github.**", name="fragile", retry=RetryPolicy(initial_interval=0, maximum_attempts=2))
    async def fragile(event: Event, ctx: HandlerContext) -> None:
        if event.type == "github.push":
            raise ValueError("cannot handle pushes")

    async def main() -> None:
        async with app:
            await app.publish(Event(type="github.issues.opened", source="github", subject="a/b#1"))
            await app.publish(Event(type="github.push", source="github", subject="a/b"))
            await app.publish(Event(type="linear.issue.updated", source="linear", subject="ENG-1"))
            await app.drain(timeout=30)

    asyncio.run(main())


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _populate(url)
    return url


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_events_list_json_is_one_object_per_line_newest_first(store_url: str) -> None:
    lines = run("events", "list", "--store", store_url, "--json").splitlines()
    types = [json.loads(line)["type"] for line in lines]
    assert types == ["linear.issue.updated", "github.push", "github.issues.opened"]
    assert all("data" not in json.loads(line) for line in lines)


def test_events_list_filters_by_type_pattern(store_url: str) -> None:
    lines = run("events", "list", "--store", store_url, "--json", "--type", "github.*").splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["github.push"]
    text = run("events", "list", "--store", store_url, "--type", "github.**")
    assert "github.issues.opened" in text
    assert "linear" not in text


def test_events_list_filters_by_source_subject_and_work_item(store_url: str) -> None:
    def types(*args: str) -> list[str]:
        out = run("events", "list", "--store", store_url, "--json", *args).splitlines()
        return [json.loads(line)["type"] for line in out]

    assert types("--source", "linear") == ["linear.issue.updated"]
    assert types("--subject", "a/b") == ["github.push"]
    assert types("--source", "github", "--type", "github.issues.*") == ["github.issues.opened"]
    assert types("--correlation-id", "nobody") == []
    bad = CliRunner().invoke(cli, ["events", "list", "--store", store_url, "--type", "a..b"])
    assert bad.exit_code == 1
    assert "pattern" in bad.output


def test_events_list_hides_system_streams_unless_asked(store_url: str) -> None:
    plain = run("events", "list", "--store", store_url, "--json").splitlines()
    assert not any(json.loads(line)["stream"].startswith("$") for line in plain)
    everything = run("events", "list", "--store", store_url, "--json", "--system").splitlines()
    assert any(json.loads(line)["stream"].startswith("$dlq-") for line in everything)


def test_events_show_prints_the_whole_event(store_url: str) -> None:
    first = json.loads(run("events", "list", "--store", store_url, "--json").splitlines()[0])
    shown = json.loads(run("events", "show", "--store", store_url, first["id"]))
    assert shown["id"] == first["id"]
    assert shown["position"] == first["position"]


def test_events_show_unknown_id_is_a_clear_error(store_url: str) -> None:
    result = CliRunner().invoke(cli, ["events", "show", "--store", store_url, "nope"])
    assert result.exit_code == 1
    assert "no event with id nope" in result.output


def test_dlq_list_redrive_once_and_discard(store_url: str) -> None:
    letters = [
        json.loads(x) for x in run("dlq", "list", "--store", store_url, "--json").splitlines()
    ]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["subscription"] == "fragile"
    assert letter["error_type"] == "ValueError"
    assert letter["error_message"] == "cannot handle pushes"
    assert letter["attempts"] == 2

    assert "redriven: 1" in run("dlq", "redrive", "--store", store_url, letter["id"])
    again = CliRunner().invoke(cli, ["dlq", "redrive", "--store", store_url, letter["id"]])
    assert again.exit_code == 1
    assert "not parked" in again.output
    assert run("dlq", "list", "--store", store_url, "--json").strip() == ""
    redriven = run("dlq", "list", "--store", store_url, "--json", "--status", "redriven")
    assert json.loads(redriven.splitlines()[0])["id"] == letter["id"]

    discard = CliRunner().invoke(cli, ["dlq", "discard", "--store", store_url, letter["id"]])
    assert discard.exit_code == 1
    missing = CliRunner().invoke(cli, ["dlq", "redrive", "--store", store_url, "no-such-letter"])
    assert missing.exit_code == 1

    # Every operator command is an audit event: who (the OS user), what, to what, outcome.
    audit = audit_events(store_url)
    assert [(a["type"], a["target"], a["outcome"]) for a in audit] == [
        ("contexten.audit.dlq.redrive", letter["id"], "redriven"),
        ("contexten.audit.dlq.redrive", letter["id"], "unchanged"),
        ("contexten.audit.dlq.discard", letter["id"], "unchanged"),
        ("contexten.audit.dlq.redrive", "no-such-letter", "not found"),
    ]
    assert all(a["principal"]["token_id"] == "cli" for a in audit)
    assert all(a["principal"]["name"].startswith("cli:") for a in audit)
    assert all(a["client"].startswith("cli@") for a in audit)


def test_dlq_redrive_all_and_discard(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    _populate(url)
    _populate(url)  # a second app run on the same file: same subscription, a new failing push
    letters = [json.loads(x) for x in run("dlq", "list", "--store", url, "--json").splitlines()]
    assert len(letters) == 2
    assert f"discarded: {letters[0]['id']}" in run(
        "dlq", "discard", "--store", url, letters[0]["id"]
    )
    assert "redriven: 1" in run("dlq", "redrive", "--store", url, "--all")
    assert run("dlq", "list", "--store", url, "--json").strip() == ""


def test_unknown_store_scheme_is_one_clear_line() -> None:
    result = CliRunner().invoke(cli, ["events", "list", "--store", "bogus://x"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown event store URL scheme 'bogus'")
    assert "Traceback" not in result.output
