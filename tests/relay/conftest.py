"""Fixtures for the relay tests: a unique JetStream stream on the shared NATS server, and a
private ``nats-server`` this test may kill and restart (never the shared one)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contexten.observability.logging import configure_logging, reset_logging

nats = pytest.importorskip("nats", reason="the nats extra is not installed")

REQUIRE_SERVICES = os.environ.get("CONTEXTEN_REQUIRE_SERVICES") == "1"
NATS_SERVER = os.environ.get("CONTEXTEN_TEST_NATS_SERVER", "/usr/sbin/nats-server")


@pytest.fixture(autouse=True)
def _production_logging() -> Iterator[None]:
    """Log as a deployed app does (JSON, INFO and up)."""
    configure_logging(json=True, level="INFO")
    yield
    reset_logging()


@pytest.fixture
async def stream_name(nats_url: str) -> AsyncIterator[str]:
    """A fresh stream name; the stream (if the test made one) is deleted afterwards."""
    name = f"CTXTEST_{uuid.uuid4().hex[:12]}"
    yield name
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        await nc.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass  # the test never created it
    finally:
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PrivateNats:
    """A ``nats-server -js`` of the test's own, on a free port, with its store in a temp
    directory: :meth:`kill` (SIGKILL) and :meth:`start` it at will."""

    port: int
    store_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                NATS_SERVER,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError as e:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"nats-server exited with {code}") from e
                time.sleep(0.05)
        raise RuntimeError("nats-server did not listen within 10 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A private JetStream server (skips when the binary is absent, unless
    ``CONTEXTEN_REQUIRE_SERVICES=1``); always killed at the end."""
    if shutil.which(NATS_SERVER) is None:
        message = f"the nats-server binary is not at {NATS_SERVER} (CONTEXTEN_TEST_NATS_SERVER)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (CONTEXTEN_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    server = PrivateNats(free_port(), tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.kill()
