"""A real ``contexten serve`` on PostgreSQL, through crashes and a lost database: every stderr
line is one JSON record, and no canary secret reaches a log line, an API answer, ``/metrics``
or the store.

The served app takes signed webhooks (from the test, and from the sandbox, which posts the
echoes of the app's own actions), comments on GitHub through the sandbox with a canary token,
dead-letters a hostile payload, and runs a supervised loop that crashes twice holding secrets
in its locals. Mid-run its throwaway database stops accepting connections and every open one
is terminated (the PostgreSQL server itself keeps running); then it comes back, and the app
must recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn

from contexten.cli.simulate import SignedRequest, github_request
from contexten.store import create_store
from contexten.testing.sandbox import Sandbox
from contexten.testing.sandbox.core import SandboxConfig
from ingress._serving import ServeProcess  # the sibling test package (tests/ is on sys.path)
from ingress._support import HANG_GUARD, pull_request_payload

PG_PASSWORD = "Canary-pg-pw-Vb7x"
SECRETS = {
    "github": "Canary-gh-webhook-Qw3e",
    "linear": "Canary-lin-webhook-Rt4y",
    "slack": "Canary-slack-signing-Ui8o",
    "codegen": "Canary-codegen-webhook-Pa2s",
}
TOKENS = {
    "CONTEXTEN_GITHUB_TOKEN": "Canary-gh-token-Lm5n",
    "CONTEXTEN_LINEAR_API_KEY": "Canary-lin-key-Df6g",
    "CONTEXTEN_SLACK_BOT_TOKEN": "Canary-slack-token-Hj7k",
    "CONTEXTEN_CODEGEN_TOKEN": "Canary-codegen-token-Zx1c",
    "CONTEXTEN_ADMIN_TOKEN": "Canary-admin-token-Vb9n",
}
CANARIES = (PG_PASSWORD, *SECRETS.values(), *TOKENS.values())
HOSTILE_REF = (
    'refs/heads/x\n{"event": "forged", "level": "info"}\r\x1b[2J\x1b]0;pwned\x07[bold red]x'
)

APP = textwrap.dedent(
    """
    import asyncio
    import os

    from contexten import App, Event, HandlerContext, RetryPolicy
    from contexten.integrations.github import actions as github

    app = App()
    crashes = 0


    @app.on("github.pull_request.opened", name="thank", retry=RetryPolicy(initial_interval=0.1))
    async def thank(event: Event, ctx: HandlerContext) -> None:
        token = os.environ["CONTEXTEN_GITHUB_TOKEN"]  # a local no traceback may show
        pr = event.data["pull_request"]
        await github.create_issue_comment(
            event.data["repository"]["full_name"], pr["number"], f"thanks ({len(token)})"
        )


    @app.on("github.push", name="deploy", retry=RetryPolicy.no_retries())
    async def deploy(event: Event, ctx: HandlerContext) -> None:
        secret = os.environ["CONTEXTEN_GITHUB_WEBHOOK_SECRET"]
        raise ValueError(f"cannot deploy {event.data['ref']} ({len(secret)})")


    async def flaky() -> None:
        global crashes
        dsn = os.environ["CONTEXTEN_STORE_URL"]
        tokens = {k: v for k, v in os.environ.items() if "TOKEN" in k or "SECRET" in k}
        crashes += 1
        if crashes > 2:
            await asyncio.Event().wait()
        await asyncio.sleep(0.05)
        raise ConnectionResetError(
            f"flaky loop lost its peer ({len(dsn)}, {len(tokens)})\\n{{\\"event\\": \\"forged\\"}}"
        )


    @app.on_startup
    async def start_flaky() -> None:
        app.supervisor.start("flaky", flaky)
    """
)


def _store_url(server: str, database: str, form: str) -> str:
    """The server's URL for ``database``, with the canary password in the given form."""
    parts = urlsplit(server)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    if form == "userinfo":
        return urlunsplit(
            parts._replace(netloc=f"{user}:{PG_PASSWORD}@{host}", path=f"/{database}")
        )
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(
        parts._replace(
            netloc=f"{user}@{host}", path=f"/{database}", query=f"{query}password={PG_PASSWORD}"
        )
    )


@contextlib.asynccontextmanager
async def _serving_sandbox(sandbox: Sandbox) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(
            sandbox.app, host="127.0.0.1", port=0, lifespan="on", log_config=None, ws="none"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, HANG_GUARD)


class Run:
    """What the test watches of one served run."""

    def __init__(self, store_url: str, serve: ServeProcess, http: httpx.AsyncClient) -> None:
        self.store_url = store_url
        self.serve = serve
        self.http = http
        self.url = ""
        self.answers: list[str] = []

    async def comments(self) -> int:
        """How many comments the app has recorded making (its action events)."""
        async with create_store(self.store_url) as store:
            return sum(
                rec.event.type == "contexten.action.github.create_issue_comment"
                for rec in await store.read_all(after=0, limit=10_000)
            )

    async def until(self, condition: Callable[[], Awaitable[bool]]) -> None:
        async with asyncio.timeout(HANG_GUARD):
            while not await condition():  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.1)

    async def post(self, request: SignedRequest) -> int:
        answer = await self.http.post(
            f"{self.url}/webhooks/github", content=request.body, headers=request.headers
        )
        self.answers.append(answer.text)
        return answer.status_code

    async def post_until_stored(self, number: int) -> None:
        """Post a signed webhook until it is acknowledged (503 while the store is away)."""
        request = github_request(
            "pull_request.opened", pull_request_payload(number), secret=SECRETS["github"]
        )
        async with asyncio.timeout(HANG_GUARD):
            while (status := await self.post(request)) != 202:
                assert status == 503, self.answers[-1]
                await asyncio.sleep(0.1)

    async def status(self, path: str) -> int:
        answer = await self.http.get(f"{self.url}{path}")
        self.answers.append(answer.text)
        return answer.status_code

    async def collect_answers(self) -> None:
        """Every answer the HTTP API gives, with and without a credential."""
        auth = {"Authorization": f"Bearer {TOKENS['CONTEXTEN_ADMIN_TOKEN']}"}
        for path in ("/healthz", "/readyz", "/readyz?verbose=1", "/metrics", "/openapi.json"):
            for headers in ({}, auth):
                self.answers.append(
                    (await self.http.get(f"{self.url}{path}", headers=headers)).text
                )
        listed = await self.http.get(f"{self.url}/api/v1/events?limit=500", headers=auth)
        self.answers.append(listed.text)
        events = listed.json().get("events", [])
        assert len(events) >= 4, listed.text
        for item in events:
            one = await self.http.get(
                f"{self.url}/api/v1/events/{item['event']['id']}", headers=auth
            )
            self.answers.append(one.text)


async def _dump_tables(url: str) -> str:
    """Every row of every table of the store (schema ``contexten``), as text."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'contexten'"
        )
        dump = []
        for table in tables:
            rows = await conn.fetch(f'SELECT * FROM contexten."{table["table_name"]}"')
            dump.append(repr([dict(row) for row in rows]))
        return "\n".join(dump)
    finally:
        await conn.close()


async def _lose_the_database(admin: asyncpg.Connection, database: str) -> None:
    """Refuse new connections to ``database`` and end the open ones (the server runs on)."""
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
    )


async def _serve_through_an_outage(
    run: Run, sandbox: Sandbox, admin: asyncpg.Connection, database: str
) -> None:
    serve = run.serve
    run.url = await serve.wait_ready()
    sandbox.core.webhooks.url = f"{run.url}/webhooks"  # echoes of our comments come back
    await sandbox.core.webhooks.start()  # it did not deliver without a URL; now it does
    issues = [sandbox.github.create_issue("octo/repo", f"issue {i}")["number"] for i in range(2)]

    # Webhooks: one the app acts on, one it dead-letters, one badly signed; a login-style URL.
    await run.post_until_stored(issues[0])
    assert (
        await run.post(github_request("push", {"ref": HOSTILE_REF}, secret=SECRETS["github"]))
        == 202
    )
    assert await run.post(github_request("push", {"ref": "x"}, secret="not-the-secret")) == 401
    await run.status(f"/readyz?token={TOKENS['CONTEXTEN_ADMIN_TOKEN']}")

    async def commented(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await run.comments() >= count

        return check

    await run.until(await commented(1))

    async def crashed_twice() -> bool:
        return serve.log().count('"task": "flaky"') >= 2

    await run.until(crashed_twice)

    # The database goes away: webhooks are refused (503) and readiness fails, then it comes
    # back and everything carries on.
    await _lose_the_database(admin, database)

    async def unready() -> bool:
        return await run.status("/readyz") == 503

    await run.until(unready)
    request = github_request(
        "pull_request.opened", pull_request_payload(99), secret=SECRETS["github"]
    )
    assert await run.post(request) == 503
    await asyncio.sleep(1.0)  # the loops notice, crash and back off meanwhile
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    await run.post_until_stored(issues[1])
    await run.until(await commented(2))

    async def ready() -> bool:
        return await run.status("/readyz") == 200

    await run.until(ready)
    await run.collect_answers()
    serve.terminate()
    assert await serve.wait_exit() == 0, serve.log()


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["userinfo", "query"])
async def test_a_served_run_logs_json_only_and_leaks_no_secret(
    tmp_path: Path, postgres_url: str, form: str
) -> None:
    database = f"ctx_logs_{uuid.uuid4().hex[:12]}"
    store_url = _store_url(postgres_url, database, form)
    (tmp_path / "canary_app.py").write_text(APP)
    env = {
        "CONTEXTEN_STORE_URL": store_url,
        "CONTEXTEN_CODEGEN_ORG_ID": "1",
        "CONTEXTEN_GITHUB_WEBHOOK_SECRET": SECRETS["github"],
        "CONTEXTEN_LINEAR_WEBHOOK_SECRET": SECRETS["linear"],
        "CONTEXTEN_SLACK_SIGNING_SECRET": SECRETS["slack"],
        "CONTEXTEN_CODEGEN_WEBHOOK_SECRET": SECRETS["codegen"],
        **TOKENS,
    }
    sandbox = Sandbox(SandboxConfig(secrets=dict(SECRETS)))
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    serve: ServeProcess | None = None
    try:
        async with (
            _serving_sandbox(sandbox) as sandbox_url,
            httpx.AsyncClient(timeout=HANG_GUARD) as http,
        ):
            serve = ServeProcess(
                tmp_path,
                ["--app", "canary_app.py:app", "--log-level", "debug", "--access-log"],
                {**env, "CONTEXTEN_SANDBOX_URL": sandbox_url},
                separate_stdout=True,
            )
            run = Run(store_url, serve, http)
            await _serve_through_an_outage(run, sandbox, admin, database)
        async with create_store(store_url) as store:
            stored = await store.read_all(after=0, limit=100_000)
        stored_text = "\n".join(msgspec.json.encode(rec.event).decode() for rec in stored)
        types = {rec.event.type for rec in stored}
        assert {"github.issues.opened", "github.issue_comment.created"} <= types  # the sandbox's
        tables = await _dump_tables(store_url)
    finally:
        if serve is not None:
            serve.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()

    log = serve.log()
    assert serve.stdout_path is not None
    assert serve.stdout_path.read_text() == ""
    records = [json.loads(line) for line in log.splitlines()]  # every line: one JSON record
    _check_records(records)
    assert "\x1b" not in log
    assert "\r" not in log
    answers = "\n".join(run.answers)
    for canary in CANARIES:
        assert canary not in log, f"{canary} in the log"
        assert canary not in answers, f"{canary} in an API answer"
        assert canary not in stored_text, f"{canary} in a stored event"
        assert canary not in tables, f"{canary} in the store's tables"


def _check_records(records: list[dict[str, Any]]) -> None:
    events = [r["event"] for r in records]
    assert "forged" not in events
    crashes = [r for r in records if r["event"] == "supervised task crashed; restarting"]
    assert len([c for c in crashes if c.get("task") == "flaky"]) >= 2
    tracebacks = [r["exception"] for r in records if "exception" in r]
    assert tracebacks
    for stacks in tracebacks:  # a field of the one line, never with frame locals
        for stack in stacks:
            assert all(set(frame) == {"filename", "lineno", "name"} for frame in stack["frames"])
    access = [r["event"] for r in records if r["logger"] == "uvicorn.access"]
    assert any("/readyz?token=*** " in line for line in access), access
    outage = [r for r in records if r["level"] in ("warning", "error") and r.get("task") != "flaky"]
    assert outage  # the lost database was logged, as JSON like the rest
    assert {"uvicorn.error", "contexten.app", "contexten.dispatcher", "httpx"} <= {
        r["logger"] for r in records
    }
