"""Fixtures for the bus tests: the same scenarios on the memory and the SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import Backend, StepClock


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The store the test runs on: each test runs once per backend."""
    return Backend(request.param, tmp_path)


@pytest.fixture
def clock() -> StepClock:
    """A clock that skips (and records) every sleep."""
    return StepClock()
