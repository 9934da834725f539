"""A token revoked in one process is refused by another within a second or two: a real
``contexten serve`` and the ``contexten tokens`` commands, separate processes on one store
(a SQLite file, and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingress._serving import ServeProcess  # the sibling test package (tests/ is on sys.path)
from ingress._support import HANG_GUARD

ADMIN = "revocation-test-admin-Qm4v"
REFUSED_WITHIN = 10.0
"""A bound that only catches a hang; the design target (about 1 s) is what the log shows."""


@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.close()


def tokens_command(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from contexten.cli import main; main()", "tokens", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


async def test_a_token_revoked_by_one_process_is_refused_by_another(
    tmp_path: Path, shared_url: str, processes: list[ServeProcess]
) -> None:
    serve = ServeProcess(tmp_path, ["--store", shared_url], {"CONTEXTEN_ADMIN_TOKEN": ADMIN})
    processes.append(serve)
    url = await serve.wait_ready()

    made = tokens_command(
        tmp_path, "create", "--role", "viewer", "--name", "ci", "--store", shared_url
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = token.split("_")[1]
    bearer = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=HANG_GUARD) as client:
        async with asyncio.timeout(HANG_GUARD):  # a token made elsewhere works at once
            while (await client.get("/api/v1/events", headers=bearer)).status_code != 200:  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.05)

        revoked = tokens_command(tmp_path, "revoke", token_id, "--store", shared_url)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        while (await client.get("/api/v1/events", headers=bearer)).status_code != 401:
            assert time.monotonic() - started < REFUSED_WITHIN, "the revoked token still works"
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        print(f"revoked token refused by the other process after {elapsed:.2f} s")
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert (await client.get("/api/v1/events", headers=admin)).status_code == 200
    serve.terminate()
    assert await serve.wait_exit() == 0, serve.log()
    assert token not in serve.log()
