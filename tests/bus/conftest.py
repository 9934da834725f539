"""Fixtures for the bus tests: the same scenarios on the memory and the SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from contexten.observability.logging import configure_logging

from ._support import Backend, StepClock


@pytest.fixture(autouse=True)
def _production_logging() -> Iterator[None]:
    """Log as a deployed app does (JSON, INFO and up): failure tests log a lot, and
    structlog's default renders every DEBUG traceback richly, which is slow."""
    configure_logging(json=True, level="INFO")
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The store the test runs on: each test runs once per backend."""
    return Backend(request.param, tmp_path)


@pytest.fixture
def clock() -> StepClock:
    """A clock that skips (and records) every sleep."""
    return StepClock()
