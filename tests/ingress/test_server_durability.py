"""Nothing acknowledged that is not stored, over a real server: the SQLite file deleted
mid-flood, a full disk, and a store slower than the platform's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contexten import App
from contexten.cli.simulate import SignedRequest, github_request, send, slack_request
from contexten.clock import WallClock
from contexten.store.sqlite import SqliteEventStore

from ._serving import ServeProcess, serving
from ._support import GITHUB_SECRET, HANG_GUARD, SLACK_SECRET, make_config, pull_request_payload

ENV = {
    "CONTEXTEN_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    "CONTEXTEN_SLACK_SIGNING_SECRET": SLACK_SECRET,
}


@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(timeout=HANG_GUARD, limits=limits) as client:
        yield client


def _pr(number: int) -> SignedRequest:
    return github_request("pull_request.opened", pull_request_payload(number), secret=GITHUB_SECRET)


async def _stored_deliveries(db: Path) -> set[str | None]:
    async with SqliteEventStore(f"sqlite:///{db}") as store:
        records = await store.read_all(limit=100_000)
        return {r.event.delivery_id for r in records if r.event.source in ("github", "slack")}


async def test_deleting_the_database_mid_flood_stops_acknowledging(
    tmp_path: Path, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    db = tmp_path / "contexten.db"
    serve = ServeProcess(tmp_path, ["--store", f"sqlite:///{db}", "--no-dispatch"], ENV)
    processes.append(serve)
    url = await serve.wait_ready()
    answers: dict[str | None, int] = {}
    enough = asyncio.Event()

    async def post(request: SignedRequest) -> None:
        answers[request.delivery] = (await send(http, url, request)).status_code
        if len(answers) >= 50:
            enough.set()

    flood = asyncio.gather(*(post(_pr(n)) for n in range(200)))
    async with asyncio.timeout(HANG_GUARD):
        await enough.wait()
    # `rm contexten.db*`, keeping a link to the files the server has open, to check them.
    _remove_keeping_a_link(db, tmp_path / "kept.db")
    async with asyncio.timeout(HANG_GUARD):
        await flood

    acknowledged = {d for d, status in answers.items() if status == 202}
    assert set(answers.values()) <= {202, 503}
    assert 50 <= len(acknowledged) < 200
    later = await send(http, url, _pr(1000))
    assert later.status_code == 503
    assert later.headers["Retry-After"] == "1"
    assert (await http.get(f"{url}/readyz")).status_code == 503
    serve.terminate()
    assert await serve.wait_exit() == 0, serve.log()[-3000:]
    assert "SQLite event store lost its file" in serve.log()
    assert not db.exists()  # nothing recreated a file silently
    assert await _stored_deliveries(tmp_path / "kept.db") == acknowledged


class _FillingStore(SqliteEventStore):
    """A store on a disk that fills up after a few pages, and can be given space again."""

    write_conn: sqlite3.Connection

    def _prepare_write_connection(self, conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 40}")
        self.write_conn = conn

    def free_space(self) -> None:
        self.write_conn.execute("PRAGMA max_page_count = 4294967294")


async def test_readyz_fails_while_the_disk_is_full_and_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _FillingStore(f"sqlite:///{tmp_path / 'full.db'}")
    app = App(store, shutdown_grace=1.0)
    async with (
        serving(app, make_config(clock=WallClock())) as (_, url),
        httpx.AsyncClient(timeout=HANG_GUARD) as client,
    ):
        assert (await client.get(f"{url}/readyz")).status_code == 200
        statuses = []
        with caplog.at_level(logging.ERROR):
            for number in range(200):
                payload = pull_request_payload(number)
                payload["pull_request"]["body"] = "x" * 4000
                request = github_request("pull_request.opened", payload, secret=GITHUB_SECRET)
                statuses.append((await send(client, url, request)).status_code)
                if statuses[-1] == 503:
                    break
        assert statuses[0] == 202
        assert statuses[-1] == 503
        ready = await client.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert "ENOSPC" in caplog.text
        assert "writes are failing" in caplog.text
        store.free_space()
        assert (await send(client, url, _pr(9999))).status_code == 202
        assert (await client.get(f"{url}/readyz")).status_code == 200
    await app.stop()


_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextlib.contextmanager
def _write_lock_held_by_another_process(db: Path) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            yield holder
        finally:
            if holder.poll() is None:
                holder.kill()


async def test_a_store_slower_than_slacks_deadline_answers_503_and_the_retry_dedups(
    tmp_path: Path, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    db = tmp_path / "slow.db"
    url_arg = f"sqlite:///{db}?busy_timeout=20"  # the lock wait alone would outlast Slack
    serve = ServeProcess(tmp_path, ["--store", url_arg, "--no-dispatch"], ENV)
    processes.append(serve)
    url = await serve.wait_ready()
    slack = slack_request("app_mention", {"text": "hi"}, secret=SLACK_SECRET)
    github = _pr(1)
    with _write_lock_held_by_another_process(db) as holder:
        slow_github = asyncio.create_task(send(http, url, github))
        await asyncio.sleep(0.1)
        async with asyncio.timeout(HANG_GUARD):
            answer = await send(http, url, slack)
        # Slack was answered while the lock is still held, and told to retry.
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": "store too slow, retry later"}
        assert answer.headers["Retry-After"] == "1"
        assert not slow_github.done()  # GitHub's deadline is longer: it still waits
        assert holder.stdin is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        async with asyncio.timeout(HANG_GUARD):
            assert (await slow_github).status_code == 202
    # The commit Slack was not told about landed after all: its retry is a duplicate.
    retry = await send(http, url, slack)
    assert retry.status_code == 200
    assert retry.json() == {"status": "duplicate"}
    serve.terminate()
    assert await serve.wait_exit() == 0
    assert await _stored_deliveries(db) == {slack.delivery, github.delivery}


def _remove_keeping_a_link(db: Path, kept: Path) -> None:
    """``rm db*``, after linking the database and its WAL as ``kept`` (to check them later)."""
    for suffix in ("", "-wal"):
        Path(f"{kept}{suffix}").hardlink_to(f"{db}{suffix}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
