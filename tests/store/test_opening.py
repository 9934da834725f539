"""Opening a store at start: what is waited for and what fails at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contexten import App
from contexten.exceptions import ConfigurationError, StoreUnavailable
from contexten.store.opening import OPEN_WAIT_ENV, open_wait_from_env


async def test_a_sqlite_file_in_a_missing_directory_fails_at_once_whatever_the_wait(
    tmp_path: Path,
) -> None:
    app = App(f"sqlite:///{tmp_path}/no/such/dir/app.db", store_open_wait=30)
    began = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await app.start()
    assert time.monotonic() - began < 5, "a missing directory does not come back by waiting"
    assert not app.running


def test_the_wait_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPEN_WAIT_ENV, raising=False)
    assert open_wait_from_env(7.0) == 7.0
    monkeypatch.setenv(OPEN_WAIT_ENV, "2.5")
    assert open_wait_from_env(7.0) == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(OPEN_WAIT_ENV, bad)
        with pytest.raises(ConfigurationError, match=OPEN_WAIT_ENV):
            open_wait_from_env(7.0)


def test_a_negative_wait_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="store_open_wait"):
        App("memory://", store_open_wait=-1)
