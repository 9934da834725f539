"""The event loop and collector of a process Contexten owns (``contexten.event_loop``)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from contexten.event_loop import EVENT_LOOP_ENV, run, serving_gc
from contexten.exceptions import ConfigurationError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(None, "uvloop"), ("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
)
def test_run_picks_uvloop_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, choice: str | None, expected: str
) -> None:
    pytest.importorskip("uvloop", reason="uvloop is a dependency on CPython outside Windows")
    if choice is None:
        monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(EVENT_LOOP_ENV, choice)
    assert run(_loop_module()) == expected


def test_an_unknown_loop_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "trio")
    main = _loop_module()
    with pytest.raises(ConfigurationError, match="auto, asyncio or uvloop"):
        run(main)
    assert main.cr_frame is None  # closed, never started: no "never awaited" warning


def test_serving_gc_freezes_and_restores() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with serving_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 7_000
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
