"""The dashboard's one-line event summaries: the CLI timeline's words as plain text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rich.text import Text

from contexten import Event
from contexten.cli._timeline import describe
from contexten.dashboard.render import summary
from contexten.store.base import RecordedEvent


def recorded(type_: str, data: dict[str, Any], subject: str | None = None) -> RecordedEvent:
    event = Event(type=type_, source=type_.split(".")[0], subject=subject, data=data)
    return RecordedEvent(1, "s", 1, datetime.now(UTC), event)


PR = {"sender": {"login": "ada"}, "pull_request": {"number": 7, "title": "Fix login"}}
MERGED = {**PR, "pull_request": {"number": 7, "merged": True}}
HOSTILE = {**PR, "pull_request": {"number": 8, "title": "[bold]x[/] a:b"}}


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        # no markup at all: the line is its own plain text
        (recorded("github.pull_request.opened", PR), "▶ ada opened PR #7 “Fix login”"),
        # markup tags are dropped
        (
            recorded("github.pull_request.closed", MERGED),
            "▶ ada merged PR #7",
        ),
        # markup in a payload is text: it prints as itself, brackets and all
        (
            recorded("github.pull_request.opened", HOSTILE),
            "▶ ada opened PR #8 “[bold]x[/] a:b”",
        ),
        # no CLI line: the type and subject
        (recorded("acme.thing.happened", {}, subject="t-1"), "acme.thing.happened t-1"),
    ],
)  # fmt: skip
def test_summary_is_the_timeline_line_as_plain_text(rec: RecordedEvent, expected: str) -> None:
    assert summary(rec) == expected
    line = describe(rec)
    if line is not None:  # the same text the markup parser makes of the CLI's line
        assert summary(rec) == Text.from_markup(line[2]).plain
