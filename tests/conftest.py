"""Shared test fixtures: service discovery that skips, or fails under CI."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests check behaviour, not speed: on a loaded 2-core machine a generated example
# can take longer than Hypothesis's defaults, which would fail a correct test at random.
settings.register_profile("contexten", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("contexten")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"

REQUIRE_SERVICES = os.environ.get("CONTEXTEN_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the calling test when ``name`` is not listening, or fail under CI."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CONTEXTEN_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    """URL of the test PostgreSQL database (skips when the server is absent)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get(
        "CONTEXTEN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture
def redis_url() -> str:
    """URL of the test Redis server (skips when the server is absent)."""
    require_service("Redis", "127.0.0.1", 6379)
    return os.environ.get("CONTEXTEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def nats_url() -> str:
    """URL of the test NATS JetStream server (skips when the server is absent)."""
    require_service("NATS", "127.0.0.1", 4222)
    return os.environ.get("CONTEXTEN_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def github_fixtures() -> Path:
    """The shared collection of real GitHub webhook payloads."""
    path = FIXTURES / "github-webhooks"
    if not path.is_dir():
        pytest.fail(f"shared fixtures missing at {path}")
    return path
