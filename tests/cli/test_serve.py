"""``contexten serve`` as a process: which App it serves, the store it uses, refusing what
cannot work, and a clean shutdown on SIGTERM that lets an in-flight request finish."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contexten.cli.serve import resolve_app
from contexten.cli.simulate import github_request
from contexten.exceptions import AppLoadError, ConfigurationError
from contexten.store import create_store
from ingress._serving import ServeProcess  # the sibling test package (tests/ is on sys.path)
from ingress._support import GITHUB_SECRET, HANG_GUARD, pull_request_payload

ENV = {"CONTEXTEN_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}


@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for process in started:
        process.close()


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """resolve_app imports user modules and sets CONTEXTEN_STORE_URL: undo both."""
    monkeypatch.setenv("CONTEXTEN_STORE_URL", "memory://")
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = saved_path
    for added in set(sys.modules) - saved_modules:
        del sys.modules[added]


def _write_devteam(cwd: Path, store: str = "") -> None:
    (cwd / "examples").mkdir()
    (cwd / "examples" / "devteam.py").write_text(
        textwrap.dedent(
            f"""
            from contexten import App, Event, HandlerContext

            app = App({store!r} or None)

            @app.on("github.**", name="devteam-record")
            async def record(event: Event, ctx: HandlerContext) -> None:
                print("handled", event.delivery_id, flush=True)
            """
        )
    )


async def _stored_deliveries(db: Path) -> list[str | None]:
    async with create_store(f"sqlite:///{db}") as store:
        records = await store.read_all(after=0, limit=10_000)
        # The webhooks' events (not the first start's admin token in its system stream).
        return [rec.event.delivery_id for rec in records if not rec.stream.startswith("$")]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
        yield client


async def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(
    tmp_path: Path, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    db = tmp_path / "served.db"
    serve = ServeProcess(tmp_path, ["--store", f"sqlite:///{db}"], ENV)
    processes.append(serve)
    url = await serve.wait_ready()
    assert (await http.get(f"{url}/readyz")).status_code == 200
    loaded = [line for line in serve.log().splitlines() if '"app loaded"' in line]
    assert "a bare App" in loaded[0]  # no examples/devteam.py here

    request = github_request("pull_request.opened", pull_request_payload(4), secret=GITHUB_SECRET)
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = [
        "POST /webhooks/github HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(request.body)}",
        "Expect: 100-continue",
        *(f"{k}: {v}" for k, v in request.headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    async with asyncio.timeout(HANG_GUARD):
        # 100 Continue: the app is reading the body, the request is in flight.
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        serve.terminate()
        while "Shutting down" not in serve.log_events():  # noqa: ASYNC110 - watching a log file
            await asyncio.sleep(0.02)
        writer.write(request.body)
        await writer.drain()
        response = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 202"), response
    assert await serve.wait_exit() == 0, serve.log()
    events = serve.log_events()
    assert events.index("app stopped") > events.index("Shutting down")
    assert await _stored_deliveries(db) == [request.delivery]


async def test_the_default_example_app_is_served_with_the_store_given(
    tmp_path: Path, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    _write_devteam(tmp_path)
    db = tmp_path / "devteam.db"
    serve = ServeProcess(tmp_path, ["--store", f"sqlite:///{db}"], ENV)
    processes.append(serve)
    url = await serve.wait_ready()
    loaded = json.loads(next(x for x in serve.log().splitlines() if '"app loaded"' in x))
    assert loaded["app"] == "examples/devteam.py:app"
    assert loaded["subscriptions"] == 1
    assert loaded["store"] == f"sqlite:///{db}"
    request = github_request("push", {"ref": "refs/heads/main"}, secret=GITHUB_SECRET)
    answer = await http.post(
        f"{url}/webhooks/github", content=request.body, headers=request.headers
    )
    assert answer.status_code == 202
    async with asyncio.timeout(HANG_GUARD):
        while f"handled {request.delivery}" not in serve.log():  # noqa: ASYNC110 - a log file
            await asyncio.sleep(0.02)
    serve.terminate()
    assert await serve.wait_exit() == 0, serve.log()
    assert await _stored_deliveries(db) == [request.delivery]


async def test_what_cannot_be_served_exits_1_with_a_clear_message(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    missing = ServeProcess(tmp_path, ["--app", "no_such_module_z9:app"], ENV)
    unwritable = ServeProcess(
        tmp_path, ["--store", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"], ENV
    )
    processes.extend([missing, unwritable])
    assert await missing.wait_exit() == 1
    assert "error: --app: no module named 'no_such_module_z9'" in missing.log()
    assert await unwritable.wait_exit() == 1
    assert "error: " in unwritable.log()
    assert "Uvicorn running" not in unwritable.log()


@pytest.mark.usefixtures("clean_imports")
def test_store_override_applies_only_to_apps_without_their_own(tmp_path: Path) -> None:
    app, origin = resolve_app(None, "sqlite:///chosen.db", tmp_path)
    assert origin.startswith("a bare App")
    assert app.store.url.endswith("chosen.db")

    _write_devteam(tmp_path)
    app, origin = resolve_app(None, "sqlite:///chosen.db", tmp_path)
    assert origin == "examples/devteam.py:app"
    assert app.store.url == create_store("sqlite:///chosen.db").url


@pytest.mark.usefixtures("clean_imports")
def test_store_override_conflicting_with_the_apps_own_is_refused(tmp_path: Path) -> None:
    _write_devteam(tmp_path, store="sqlite:///own.db")
    with pytest.raises(ConfigurationError, match="built its App with its own store"):
        resolve_app(None, "sqlite:///other.db", tmp_path)


@pytest.mark.usefixtures("clean_imports")
def test_an_explicit_app_reference_wins_over_the_default(tmp_path: Path) -> None:
    _write_devteam(tmp_path)
    (tmp_path / "mine_x7.py").write_text("from contexten import App\napp = App('memory://')\n")
    app, origin = resolve_app("mine_x7:app", None, tmp_path)
    assert origin == "mine_x7:app"
    assert app.store.url == "memory://"
    with pytest.raises(AppLoadError):
        resolve_app("mine_x7:nothing", None, tmp_path)


_TOKEN = re.compile(r"ctx_[0-9a-f]{12}_[A-Za-z0-9_\-]{43}")


async def _printed_tokens(serve: ServeProcess) -> list[str]:
    """The tokens the process printed, once it printed its login URL (or 2 s passed)."""
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(40):
            if "Dashboard" in serve.log():
                break
            await asyncio.sleep(0.05)
    return _TOKEN.findall(serve.log())


async def test_the_first_start_prints_an_admin_token_once_and_never_logs_it(
    tmp_path: Path, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    db = tmp_path / "fresh.db"
    first = ServeProcess(tmp_path, ["--store", f"sqlite:///{db}"], ENV)
    processes.append(first)
    url = await first.wait_ready()
    printed = await _printed_tokens(first)
    assert len(set(printed)) == 1, first.log()
    token = printed[0]
    assert f"{url}/?token={token}" in first.log()  # the login URL (for the dashboard)
    for line in first.log().splitlines():  # and never in a structured log line
        if line.startswith("{"):
            assert token not in line
    assert (await http.get(f"{url}/api/v1/events")).status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    listed = await http.get(f"{url}/api/v1/events", headers=bearer)
    assert listed.status_code == 200, listed.text
    # The store holds its hash, never the token.
    async with create_store(f"sqlite:///{db}") as store:
        stored = [r.event for r in await store.read_all(after=0, limit=1000)]
    assert [e.type for e in stored if e.type == "contexten.token.created"]
    assert all(token not in json.dumps(e.data) for e in stored)
    first.terminate()
    assert await first.wait_exit() == 0, first.log()

    again = ServeProcess(tmp_path, ["--store", f"sqlite:///{db}"], ENV)
    processes.append(again)
    url = await again.wait_ready()
    assert await _printed_tokens(again) == []  # not again: a token exists
    assert (await http.get(f"{url}/api/v1/events", headers=bearer)).status_code == 200
    again.terminate()
    assert await again.wait_exit() == 0, again.log()


async def test_an_environment_admin_token_means_no_token_is_created(
    tmp_path: Path, processes: list[ServeProcess], http: httpx.AsyncClient
) -> None:
    db = tmp_path / "env.db"
    admin = "env-admin-token-Yt5wQ9pL"
    serve = ServeProcess(
        tmp_path, ["--store", f"sqlite:///{db}"], {**ENV, "CONTEXTEN_ADMIN_TOKEN": admin}
    )
    processes.append(serve)
    url = await serve.wait_ready()
    assert await _printed_tokens(serve) == []
    answer = await http.get(f"{url}/readyz?verbose=1", headers={"Authorization": f"Bearer {admin}"})
    assert answer.status_code == 200
    assert answer.json()["details"]["ok"] is True
    assert admin not in serve.log()
    serve.terminate()
    assert await serve.wait_exit() == 0, serve.log()
    async with create_store(f"sqlite:///{db}") as store:
        assert await store.stream_version("$security-tokens") == 0


async def test_a_short_environment_admin_token_is_refused(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    serve = ServeProcess(tmp_path, [], {**ENV, "CONTEXTEN_ADMIN_TOKEN": "Zq7shortKx"})
    processes.append(serve)
    assert await serve.wait_exit() == 1
    assert "CONTEXTEN_ADMIN_TOKEN must be at least 16 characters" in serve.log()
    assert "Zq7shortKx" not in serve.log()
