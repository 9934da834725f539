"""Durations from the environment share one reading (``contexten.settings``)."""

from __future__ import annotations

import pytest

from contexten.bus.partitions import LeaseSettings
from contexten.exceptions import ConfigurationError
from contexten.projections.manager import LINGER_ENV, linger_from_env
from contexten.settings import seconds_from_env
from contexten.store.opening import OPEN_WAIT_ENV, open_wait_from_env

NAME = "CONTEXTEN_TEST_SECONDS"


@pytest.mark.parametrize(("raw", "expected"), [(None, 7.0), ("", 7.0), ("  ", 7.0), ("0", 0.0),
                                               ("2.5", 2.5), (" 3 ", 3.0)])  # fmt: skip
def test_unset_or_blank_is_the_default_and_numbers_are_seconds(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: float
) -> None:
    if raw is None:
        monkeypatch.delenv(NAME, raising=False)
    else:
        monkeypatch.setenv(NAME, raw)
    assert seconds_from_env(NAME, 7.0) == expected


@pytest.mark.parametrize("raw", ["-1", "soon", "nan", "1e400x", "2", "inf"])
def test_anything_else_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ConfigurationError, match=f"{NAME} must be a number of seconds from 0"):
        seconds_from_env(NAME, 0.0, most=1.0)


def test_a_long_value_is_quoted_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "x" * 500)
    with pytest.raises(ConfigurationError) as refused:
        seconds_from_env(NAME, 0.0)
    assert len(str(refused.value)) < 120


def test_every_duration_setting_reads_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (OPEN_WAIT_ENV, LINGER_ENV, "CONTEXTEN_LEASE_SECONDS"):
        monkeypatch.setenv(name, "-5")
    with pytest.raises(ConfigurationError, match=OPEN_WAIT_ENV):
        open_wait_from_env(30.0)
    with pytest.raises(ConfigurationError, match=LINGER_ENV):
        linger_from_env()
    with pytest.raises(ConfigurationError, match="CONTEXTEN_LEASE_SECONDS"):
        LeaseSettings.from_env()  # a negative lease used to be taken as given
