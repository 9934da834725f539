"""``contexten demo``: the dev-team app, end to end, against the local sandbox, live.

It serves the sandbox (GitHub, Linear, Slack and Codegen, in memory) and the dev-team app
(``examples/devteam.py``) on 127.0.0.1, with webhook secrets generated for the session and
shared by both, and an embedded SQLite store of its own. Then it plays a scripted scenario
through the sandbox's control API (one issue that goes all the way to a merge, one whose
agent run fails and is rolled back) and prints what happens as it happens: webhooks in,
actions out, workflow steps, one line each. Afterwards the servers keep running so you can
poke them (it prints how) until Ctrl-C; ``--exit-when-done`` stops there instead (tests, CI).

The app's API needs a token like any other server's: the session makes an admin token of
its own (it lives only in this process, never in the store) and prints the API URL with it.
Both servers listen on loopback only and answer only to loopback ``Host`` names.

Run it from the repository root (``make run``): the app is loaded from
``examples/devteam.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import click
import httpx
import uvicorn
from rich.console import Console

from contexten.app import App
from contexten.cli._common import fail, markup
from contexten.cli._scenario import Outcome, Scenario
from contexten.cli._timeline import Timeline
from contexten.exceptions import ContextenError
from contexten.ingress.config import IngressConfig
from contexten.ingress.loader import load_app
from contexten.ingress.server import IngressServer
from contexten.integrations.echo import BotIdentity
from contexten.integrations.slack import APPROVE_ACTION_ID
from contexten.observability.logging import configure_logging
from contexten.observability.redaction import redact_url
from contexten.security.hosts import default_allowed_hosts
from contexten.store import create_store
from contexten.testing.sandbox import Sandbox, SandboxConfig

__all__ = ["DEFAULT_DEMO_APP", "DemoOptions", "DemoResult", "DemoSession", "demo"]

DEFAULT_DEMO_APP: Final = "examples/devteam.py:create_app"
"""The app the demo serves: a factory, so each session gets an App on its own store."""
_STORE_ENV: Final = "CONTEXTEN_STORE_URL"
_START_TIMEOUT: Final = 30.0


class DemoError(ContextenError):
    """The demo could not run (a port in use, a store that is not empty...)."""


@dataclass(slots=True)
class DemoOptions:
    """What ``contexten demo`` was asked for.

    Attributes:
        host: the interface both servers listen on.
        port: the app's port (0: any free port).
        sandbox_port: the sandbox's port (0: any free port).
        store_url: the app's event store; it must be empty (default: a new SQLite file in
            a fresh temporary directory, kept after the demo for inspection).
        app: the App (or factory) to serve, as ``--app`` takes it.
        cwd: where ``app`` is looked for.
        agent_seconds: how long the sandbox's agent runs work.
        exit_when_done: stop after the scenario instead of serving until Ctrl-C.
        timeout: seconds any one step of the scenario may take.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    sandbox_port: int = 0
    store_url: str | None = None
    app: str = DEFAULT_DEMO_APP
    cwd: Path = field(default_factory=Path.cwd)
    agent_seconds: float = 1.5
    exit_when_done: bool = False
    timeout: float = 60.0


@dataclass(slots=True)
class DemoResult:
    """What a demo session did, for the summary and for tests."""

    app_url: str
    sandbox_url: str
    store_url: str
    api_token: str = field(default="", repr=False)
    """The session's admin token for the app's API (``Authorization: Bearer``)."""
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        """The URL that opens the dashboard, logged in (the token becomes a cookie)."""
        return f"{self.app_url}/?token={self.api_token}"


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DemoError(
            f"cannot listen on {host}:{port} ({e.strerror}); pick another with --port"
        ) from None
    return sock


class _SandboxServer(uvicorn.Server):
    """uvicorn for the sandbox: the app's server owns the signals (Ctrl-C stops both)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bot_identity(sandbox: Sandbox) -> BotIdentity:
    """Who the sandbox says the app is on each platform (for echo detection)."""
    config = sandbox.config
    return BotIdentity(
        github_logins=frozenset({config.github_bot_login}),
        slack_user_ids=frozenset({config.slack_bot_user}),
        slack_bot_ids=frozenset({config.slack_bot_id}),
        linear_user_ids=frozenset({sandbox.linear.bot["id"]}),
    )


def _ingress_config(shared: dict[str, str], host: str, api_token: str) -> IngressConfig:
    return IngressConfig(
        github_secrets=(shared["github"].encode(),),
        linear_secrets=(shared["linear"].encode(),),
        slack_secrets=(shared["slack"].encode(),),
        allowed_hosts=default_allowed_hosts(host),
        admin_token=api_token,
    )


class DemoSession:
    """One run of the demo: servers up, scenario, summary, then serve (or stop).

    Args:
        options: what to run.
        console: where the timeline and the summary go.
    """

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.store_url = options.store_url or self._fresh_store()
        self.app: App | None = None
        self.sandbox: Sandbox | None = None

    @staticmethod
    def _fresh_store() -> str:
        directory = Path(tempfile.mkdtemp(prefix="contexten-demo-"))
        return f"sqlite:///{directory / 'contexten.db'}"

    async def _check_empty(self) -> None:
        store = create_store(self.store_url)
        await store.open()
        try:
            if await store.head() > 0:
                raise DemoError(
                    f"the store {redact_url(self.store_url)} already holds events; the demo "
                    "needs an empty one (leave --store out to get a fresh one)"
                )
        finally:
            await store.close()

    def _load_app(self) -> App:
        previous = os.environ.get(_STORE_ENV)
        os.environ[_STORE_ENV] = self.store_url  # read by App() as the module builds it
        try:
            return load_app(self.options.app, cwd=self.options.cwd)
        finally:
            if previous is None:
                del os.environ[_STORE_ENV]
            else:
                os.environ[_STORE_ENV] = previous

    async def run(self) -> DemoResult:
        """Run the session; returns when it is over (Ctrl-C, or the scenario with
        ``exit_when_done``).

        Raises:
            DemoError: a port is taken, the store is not empty, a server did not start.
            AppLoadError: the app could not be loaded.
        """
        opts = self.options
        await self._check_empty()
        app_sock = _listen(opts.host, opts.port)
        sandbox_sock = _listen(opts.host, opts.sandbox_port)
        try:
            return await self._run(app_sock, sandbox_sock)
        finally:
            app_sock.close()
            sandbox_sock.close()

    async def _run(self, app_sock: socket.socket, sandbox_sock: socket.socket) -> DemoResult:
        opts = self.options
        host = opts.host
        app_url = f"http://{host}:{app_sock.getsockname()[1]}"
        sandbox_url = f"http://{host}:{sandbox_sock.getsockname()[1]}"
        shared = {p: secrets.token_urlsafe(24) for p in ("github", "linear", "slack")}
        sandbox = self.sandbox = Sandbox(
            SandboxConfig(
                webhook_url=f"{app_url}/webhooks",
                secrets=shared,
                agent_run_start_after=min(0.5, opts.agent_seconds),
                agent_run_duration=opts.agent_seconds,
            )
        )
        app = self.app = self._load_app()
        app.use_agents(sandbox.clients(base_url=sandbox_url), bot=bot_identity(sandbox))
        # Imported here: the dashboard reuses the CLI timeline's wording (contexten.cli._timeline),
        # so importing it with the CLI package would be circular.
        from contexten.dashboard import dashboard_routes

        api_token = secrets.token_urlsafe(32)
        result = DemoResult(app_url, sandbox_url, self.store_url, api_token)
        server = IngressServer(
            app,
            host=host,
            port=0,
            config=_ingress_config(shared, host, api_token),
            graceful_timeout=5,
            extra_routes=dashboard_routes(app),
        )
        sandbox_server = _SandboxServer(
            uvicorn.Config(
                sandbox.app,
                lifespan="on",
                log_config=None,
                access_log=False,
                ws="none",
                timeout_graceful_shutdown=2,
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[app_sock]), name="demo-app")
        sandboxing = asyncio.create_task(
            sandbox_server.serve(sockets=[sandbox_sock]), name="demo-sandbox"
        )
        timeline = Timeline(app.store, self.console, is_echo=app.is_echo)
        following: asyncio.Task[None] | None = None
        try:
            await self._started(serving, sandboxing, server, sandbox_server)
            self._banner(result)
            following = asyncio.create_task(timeline.follow(), name="demo-timeline")
            async with httpx.AsyncClient(base_url=sandbox_url, timeout=10.0) as control:
                scenario = Scenario(control, app, timeout=opts.timeout)
                play = asyncio.create_task(self._play(scenario, result), name="demo-scenario")
                done, _ = await asyncio.wait({play, serving}, return_when=asyncio.FIRST_COMPLETED)
                if play not in done:  # Ctrl-C while playing
                    play.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await play
                    return result
                play.result()
            await timeline.catch_up()
            self._summary(result)
            if not opts.exit_when_done:
                self._poke_help(result)
                await asyncio.shield(serving)
        finally:
            if following is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
            server.request_stop()
            sandbox_server.should_exit = True
            for task in (serving, sandboxing):
                with contextlib.suppress(Exception):
                    await task
        return result

    async def _started(
        self,
        serving: asyncio.Task[None],
        sandboxing: asyncio.Task[None],
        server: IngressServer,
        sandbox_server: uvicorn.Server,
    ) -> None:
        async with asyncio.timeout(_START_TIMEOUT):
            while not (server.started and sandbox_server.started):
                for task in (serving, sandboxing):
                    if task.done():
                        task.result()  # raises what stopped it
                        raise DemoError(f"{task.get_name()} stopped before it started")
                await asyncio.sleep(0.02)

    async def _play(self, scenario: Scenario, result: DemoResult) -> None:
        self.console.rule("[bold]1. An issue for the agent: ends merged")
        result.outcomes.append(await scenario.happy_path())
        self.console.rule("[bold]2. An issue the agent fails on: rolled back")
        result.outcomes.append(await scenario.failing_path())

    def _banner(self, result: DemoResult) -> None:
        self.console.print(
            f"[bold]Contexten demo[/]: the dev-team app on {result.app_url}, the sandbox "
            f"(GitHub, Linear, Slack, Codegen) on {result.sandbox_url}\n"
            f"events are stored in {markup(redact_url(result.store_url))}\n"
            f"[bold]Dashboard[/] (logs you in): {result.dashboard_url}\n"
            f"API token (admin, this session only): {result.api_token}\n"
            f"  curl -H 'Authorization: Bearer {result.api_token}' "
            f"'{result.app_url}/api/v1/events?limit=5'\n"
        )

    def _summary(self, result: DemoResult) -> None:
        sandbox = self.sandbox
        assert sandbox is not None
        self.console.rule("[bold]Where things ended")
        for outcome in result.outcomes:
            detail = outcome.error or ""
            if isinstance(outcome.result, dict):
                detail = ", ".join(f"{k}={v}" for k, v in outcome.result.items())
            self.console.print(
                f"  {markup(outcome.workflow_id)}: [bold]{markup(outcome.status)}[/] "
                f"({markup(detail)})"
            )
        for issue in sandbox.linear.issues.values():
            shaped = sandbox.linear.issue_json(issue)
            self.console.print(
                f"  Linear {markup(shaped['identifier'])} “{markup(shaped['title'])}”: "
                f"{markup(shaped['state']['name'])}"
            )
        for repo in sandbox.github.repos.values():
            for pr in repo.issues.values():
                if "head" not in pr:
                    continue
                state = "merged" if pr.get("merged") else pr["state"]
                kind = "draft PR" if pr.get("draft") else "PR"
                self.console.print(
                    f"  GitHub {markup(repo.full_name)} {kind} #{markup(pr['number'])}: "
                    f"{markup(state)}"
                )
        for channel, messages in sandbox.slack.messages.items():
            if messages:
                self.console.print(
                    f"  Slack #{markup(sandbox.slack.channels[channel])}: "
                    f"{len(messages)} message(s)"
                )

    def _poke_help(self, result: DemoResult) -> None:
        store = markup(redact_url(result.store_url))
        app, box = result.app_url, result.sandbox_url
        auth = f"-H 'Authorization: Bearer {result.api_token}'"
        self.console.rule("[bold]Still running: poke it")
        self.console.print(
            f"  open {result.dashboard_url}\n"
            f"  curl -s {auth} '{app}/readyz?verbose=1'\n"
            f"  curl -s {auth} '{app}/api/v1/events?limit=5'\n"
            f"  contexten events list --store {store}\n"
            f"  contexten workflows list --store {store}\n"
            f"  contexten workflows show implement-issue:ENG-1 --store {store}\n"
            "  # hand the agent a new issue (watch the timeline above it):\n"
            f"  curl -s -X POST {box}/_sandbox/linear/issues -H 'content-type: application/json'"
            ' -d \'{"title": "Add a /version endpoint"}\'\n'
            f"  curl -s -X POST {box}/_sandbox/linear/issues/<id from above> "
            "-H 'content-type: application/json' -d '{\"add_labels\": [\"agent\"]}'\n"
            "  # it stops at the Slack approval; the message's ts is in the newest of\n"
            f"  curl -s {auth} "
            f"'{app}/api/v1/events?type=contexten.action.slack.request_approval'\n"
            "  # press Approve as Ada:\n"
            f"  curl -s -X POST {box}/_sandbox/slack/press -H 'content-type: application/json'"
            f' -d \'{{"channel": "C0ENG", "ts": "<ts>", "action_id": "{APPROVE_ACTION_ID}"}}\'\n'
            "Press Ctrl-C to stop.",
            highlight=False,
            soft_wrap=True,
        )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="The app's port.")
@click.option(
    "--sandbox-port", default=0, type=int, help="The sandbox's port [default: a free one]."
)
@click.option(
    "--store",
    "store_url",
    default=None,
    help="An empty event store for the app [default: a new SQLite file in a temp directory].",
)
@click.option(
    "--app",
    "reference",
    default=DEFAULT_DEMO_APP,
    show_default=True,
    help="The dev-team App or a factory of it (module:attr or path/to/file.py:attr).",
)
@click.option(
    "--agent-seconds",
    default=1.5,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="How long the sandbox's coding agent works on each issue.",
)
@click.option(
    "--exit-when-done",
    "--no-wait",
    "exit_when_done",
    is_flag=True,
    help="Stop once the scenario has played, instead of serving until Ctrl-C.",
)
def demo(
    host: str,
    port: int,
    sandbox_port: int,
    store_url: str | None,
    reference: str,
    agent_seconds: float,
    exit_when_done: bool,
) -> None:
    """Watch the dev-team app take issues to merged pull requests, against the local sandbox."""
    configure_logging(level="WARNING")
    options = DemoOptions(
        host=host,
        port=port,
        sandbox_port=sandbox_port,
        store_url=store_url,
        app=reference,
        agent_seconds=agent_seconds,
        exit_when_done=exit_when_done,
    )
    session = DemoSession(options, Console(highlight=False))
    try:
        result = asyncio.run(session.run())
    except ContextenError as e:
        fail(str(e))
    except KeyboardInterrupt:
        sys.exit(130)
    failed = [o for o in result.outcomes if o.status not in _EXPECTED.get(o.identifier, ())]
    if exit_when_done and (len(result.outcomes) < len(_EXPECTED) or failed):
        fail("the scenario did not end as scripted")


_EXPECTED: Final[dict[str, tuple[str, ...]]] = {
    "ENG-1": ("completed",),
    "ENG-2": ("compensated",),
}
"""How the scripted work items must end."""
