"""A webhook cannot write on the operator's terminal: stored subjects, ids, error messages,
types and stream names print inert in every command and in the demo timeline."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from contexten import App, Event, HandlerContext, RetryPolicy
from contexten.cli import cli
from contexten.cli._timeline import Timeline
from contexten.exceptions import WorkflowFailedError
from contexten.store.memory import MemoryEventStore
from contexten.workflows import Workflow

# What a hostile payload puts in a subject, an id or an error message: a forged line, a
# carriage return, "clear the screen", "set the window title", a C1 CSI, a bidi override,
# rich markup and a rich hyperlink.
HOSTILE = (
    "x\n2030-01-01 forged line\r\x1b[2J\x1b]0;pwned\x07\x9b31m\u202e"
    "[bold red]loud[/] [link=https://evil.example]click[/link]"
)
# What a terminal would act on: none of it may reach the output raw.
RAW = ("\x1b[2J", "\x1b]", "\r", "\x07", "\x9b", "\u202e", "\x1b")


def _assert_inert(output: str, records: int) -> None:
    for raw in RAW:
        assert raw not in output, f"{raw!r} reached the terminal"
    assert len(output.splitlines()) == records, output


async def _fail(reason: str) -> None:
    raise ValueError(reason)


def _populate(url: str) -> None:
    """One hostile webhook-made event, dead-lettered by its handler, and a workflow instance
    named after it that fails with its text."""
    app = App(store=url)

    @app.on("github.**", name="fragile", retry=RetryPolicy.no_retries())
    async def fragile(event: Event, ctx: HandlerContext) -> None:
        raise ValueError(f"cannot handle {event.subject}")

    @app.workflow("echo", on="github.issues.opened", key=lambda e: e.subject)
    async def echo(wf: Workflow, event: Any) -> None:
        await wf.step(_fail, HOSTILE, name="step " + HOSTILE, retry=RetryPolicy.no_retries())

    async def main() -> None:
        async with app:
            await app.publish(
                Event(
                    type="github.issues.opened",
                    source="github",
                    subject=HOSTILE,
                    id="id-" + HOSTILE,
                    correlation_id=HOSTILE,
                    delivery_id=HOSTILE,
                )
            )
            with pytest.raises(WorkflowFailedError):
                await app.workflows.get_handle(f"echo:{HOSTILE}").result(timeout=30)
            await app.drain(timeout=30)

    asyncio.run(main())


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'cli.db'}"
    _populate(url)
    return url


def run(args: Sequence[str]) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_events_list_and_show(store_url: str) -> None:
    text = run(["events", "list", "--store", store_url])
    _assert_inert(text, 2)  # the webhook's event and the workflow's public outcome
    assert "\\x1b[2J" in text
    assert "[bold red]loud[/]" in text  # click prints markup as the text it is
    lines = run(["events", "list", "--store", store_url, "--json", "--system"])
    _assert_inert(lines, len(lines.splitlines()))
    assert HOSTILE in [json.loads(line).get("subject") for line in lines.splitlines()]
    shown = run(["events", "show", "--store", store_url, "id-" + HOSTILE])
    _assert_inert(shown, 1)
    assert json.loads(shown)["correlation_id"] == HOSTILE  # escaped on screen, intact as data


def test_dlq_list(store_url: str) -> None:
    text = run(["dlq", "list", "--store", store_url])
    _assert_inert(text, 1)
    assert "cannot handle x\\n2030" in text
    as_json = run(["dlq", "list", "--store", store_url, "--json"])
    _assert_inert(as_json, 1)
    assert json.loads(as_json)["error_message"] == f"cannot handle {HOSTILE}"


def test_workflows_list_and_show(store_url: str) -> None:
    text = run(["workflows", "list", "--store", store_url])
    _assert_inert(text, 1)
    assert "echo:x\\n2030" in text
    shown = run(["workflows", "show", "--store", store_url, f"echo:{HOSTILE}"])
    _assert_inert(shown, 1)
    assert json.loads(shown)["workflow_id"] == f"echo:{HOSTILE}"


def test_errors_quoting_stored_or_typed_values_are_inert(store_url: str) -> None:
    result = CliRunner().invoke(cli, ["events", "show", "--store", store_url, HOSTILE])
    assert result.exit_code == 1
    _assert_inert(result.output, 1)
    assert result.output.startswith("error: no event with id x\\n2030")


def test_errors_never_show_a_store_password(tmp_path: Path) -> None:
    url = "postgresql://app:Canary-pw-3Xs@127.0.0.1:1/nowhere?connect_timeout=0.2"
    result = CliRunner().invoke(cli, ["events", "list", "--store", url])
    assert result.exit_code == 1
    assert "Canary-pw-3Xs" not in result.output


async def _timeline_store() -> MemoryEventStore:
    store = MemoryEventStore()
    await store.open()
    h = HOSTILE
    incoming = [
        Event(
            type="linear.issue.created",
            source="linear",
            correlation_id=h,
            data={"actor": {"name": h}, "data": {"identifier": h, "title": h}},
        ),
        Event(
            type="github.pull_request.opened",
            source="github",
            data={"sender": {"login": h}, "pull_request": {"number": h, "title": h}},
        ),
        Event(
            type="slack.block_actions",
            source="slack",
            data={"user": {"username": h}, "actions": [{"action_id": h}]},
        ),
        Event(type="slack.message", source="slack", data={"event": {"user": h, "channel": h}}),
        Event(type="codegen.agent_run.failed", source="codegen", data={"id": h, "result": h}),
        Event(type="contexten.action.github.x", data={"platform": h, "action": h}),
        Event(type="contexten.workflow.failed", data={"workflow_id": h, "error": {"message": h}}),
    ]
    await store.append(h, incoming)
    engine = [
        Event(
            type="contexten.workflow.started",
            data={"workflow_id": h, "input": {"correlation_id": h}},
        ),
        Event(
            type="contexten.workflow.step_completed", data={"workflow_id": h, "name": h, "seq": 1}
        ),
        Event(
            type="contexten.workflow.step_completed",
            data={
                "workflow_id": h,
                "name": "move_issue",
                "seq": 2,
                "result": {"identifier": h, "state": {"name": h}},
            },
        ),
        Event(
            type="contexten.workflow.step_failed",
            data={"workflow_id": h, "name": h, "error": {"message": h}},
        ),
        Event(type="contexten.workflow.wait_started", data={"workflow_id": h, "pattern": h}),
        Event(
            type="contexten.workflow.compensation_step_failed", data={"workflow_id": h, "name": h}
        ),
    ]
    await store.append("$wf-hostile", engine)
    return store


async def test_the_demo_timeline_prints_stored_values_inert() -> None:
    store = await _timeline_store()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=400)
    timeline = Timeline(store, console)
    await timeline.catch_up()
    await store.close()
    text = out.getvalue()
    assert timeline.lines == 13
    # The console styles its own output (ESC[...m); nothing else of the kind gets through:
    # no screen clear, no title or hyperlink (OSC), no raw CR, BEL, CSI or bidi override.
    for raw in ("\x1b[2J", "\x1b]", "\r", "\x07", "\x9b", "\u202e"):
        assert raw not in text, f"{raw!r} reached the terminal"
    assert len(text.splitlines()) == 13
    plain = Console(file=io.StringIO(), width=400)
    with plain.capture() as captured:
        await Timeline(await _timeline_store(), plain).catch_up()
    shown = captured.get()
    assert shown.count("[bold red]loud[/]") >= 13  # markup from the store printed as text
    assert shown.count("[link=https://evil.example]click[/link]") >= 13
    assert "\\x1b[2J" in shown
