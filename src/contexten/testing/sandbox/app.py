"""The sandbox: one ASGI app emulating the parts of GitHub, Linear, Slack and Codegen that
Contexten's actions use, with state, faults, self-progressing agent runs and signed webhooks.

Mounts: ``/github`` (REST), ``/linear/graphql``, ``/slack/api/<method>``, ``/codegen/v1/...``,
and ``/_sandbox/...`` to drive it (act as a human, inject faults, finish agent runs, read the
webhook outbox). Use it in-process through :meth:`Sandbox.transport` (no sockets), or serve it
(``python -m contexten.testing.sandbox``) and point ``CONTEXTEN_SANDBOX_URL`` at it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Self

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from contexten.integrations.client import ClientRegistry
from contexten.testing.sandbox.codegen import CodegenEmulator
from contexten.testing.sandbox.core import Core, Emulator, SandboxConfig, json_response
from contexten.testing.sandbox.faults import Fault, FaultInjector, SandboxConnectionReset
from contexten.testing.sandbox.github import GitHubEmulator
from contexten.testing.sandbox.linear import LinearEmulator
from contexten.testing.sandbox.slack import SlackEmulator
from contexten.testing.sandbox.webhooks import Delivery

__all__ = ["SANDBOX_TOKEN", "Sandbox", "SandboxTransport"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SANDBOX_TOKEN = "sandbox-token"
"""The credential the sandbox's :meth:`Sandbox.clients` use (any non-empty one is accepted)."""

_PREFIXES = (
    ("/github", "github"),
    ("/linear", "linear"),
    ("/slack/api", "slack"),
    ("/codegen", "codegen"),
)


class SandboxTransport(httpx.ASGITransport):
    """An ASGI transport into the sandbox that turns its dropped connections into
    ``httpx.ReadError``, as a real connection reset would be."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except SandboxConnectionReset as error:
            raise httpx.ReadError("connection reset by peer (sandbox)", request=request) from error


async def _drop_connection(send: Send) -> None:
    # Start a response that promises a body, then fail: servers close the connection, and
    # the client sees it cut mid-response.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"65536")],
        }
    )
    raise SandboxConnectionReset("connection reset by the sandbox")


class _FaultLayer:
    """Outermost ASGI layer: applies injected faults before the emulators see a request."""

    def __init__(self, app: Starlette, core: Core, emulators: dict[str, Emulator]) -> None:
        self.app = app
        self.core = core
        self.emulators = emulators

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        match = next(((p, name) for p, name in _PREFIXES if path.startswith(p + "/")), None)
        if match is None or not self.core.faults.active:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        prefix, platform = match
        emulator = self.emulators[platform]
        key = emulator.fault_key(path[len(prefix) :], body)
        lost = False
        for fault in self.core.faults.take(platform, scope["method"], key):
            if fault.kind == "latency":
                await asyncio.sleep(fault.latency)
            elif fault.kind == "reset":
                await _drop_connection(send)
            elif fault.kind == "lost_response":
                lost = True
            else:
                await emulator.fault_response(fault)(scope, replay, send)
                return
        if lost:

            async def discard(message: Message) -> None:
                return None

            await self.app(scope, replay, discard)
            await _drop_connection(send)
        await self.app(scope, replay, send)


class Sandbox:
    """The four fake platforms in one ASGI app; see the module docstring.

    Args:
        config: behaviour (webhook URL and secrets, run timing, budgets...).
        tick_interval: how often, while started, agent runs are moved on.
        **options: :class:`SandboxConfig` fields, when ``config`` is not given.
    """

    def __init__(
        self, config: SandboxConfig | None = None, *, tick_interval: float = 0.05, **options: Any
    ) -> None:
        self.config = config or SandboxConfig(**options)
        self.core = Core(self.config)
        self.github = GitHubEmulator(self.core)
        self.linear = LinearEmulator(self.core)
        self.slack = SlackEmulator(self.core)
        self.codegen = CodegenEmulator(self.core, self.github)
        self._tick_interval = tick_interval
        self._ticker: asyncio.Task[None] | None = None
        emulators: dict[str, Emulator] = {
            "github": self.github,
            "linear": self.linear,
            "slack": self.slack,
            "codegen": self.codegen,
        }
        starlette = Starlette(
            routes=[
                Mount("/github", routes=self.github.routes()),
                Mount("/linear", routes=self.linear.routes()),
                Mount("/slack/api", routes=self.slack.routes()),
                Mount("/codegen", routes=self.codegen.routes()),
                Mount("/_sandbox", routes=self._control_routes()),
            ],
            lifespan=self._lifespan,
        )
        self.app = _FaultLayer(starlette, self.core, emulators)

    # -- the public handles -------------------------------------------------------------------

    @property
    def faults(self) -> FaultInjector:
        """Add and remove injected faults."""
        return self.core.faults

    def inject(self, kind: Any, **options: Any) -> Fault:
        """Shorthand for ``sandbox.faults.add(Fault(kind, **options))``."""
        return self.core.faults.add(Fault(kind, **options))

    @property
    def outbox(self) -> list[Delivery]:
        """Every webhook the sandbox has sent (or would have, without a URL)."""
        return self.core.webhooks.outbox

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into this sandbox, in-process (no sockets)."""
        return SandboxTransport(app=self.app)

    def clients(
        self,
        base_url: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **overrides: Any,
    ) -> ClientRegistry:
        """A client registry wired to this sandbox: in-process, or at ``base_url`` when served.

        ``transport`` replaces the in-process one (a wrapper around :meth:`transport` that
        checks or records requests, say); ``overrides`` are
        :class:`~contexten.integrations.http.HTTPSettings` fields.
        """
        env = {
            "CONTEXTEN_SANDBOX_URL": base_url or "http://127.0.0.1",
            "CONTEXTEN_GITHUB_TOKEN": SANDBOX_TOKEN,
            "CONTEXTEN_LINEAR_API_KEY": SANDBOX_TOKEN,
            "CONTEXTEN_SLACK_BOT_TOKEN": SANDBOX_TOKEN,
            "CONTEXTEN_CODEGEN_TOKEN": SANDBOX_TOKEN,
            "CONTEXTEN_CODEGEN_ORG_ID": str(self.config.codegen_org_id),
            # Sandbox runs move in seconds; follow them closely.
            "CONTEXTEN_CODEGEN_POLL_INTERVAL": str(self.config.codegen_poll_interval),
        }
        if transport is None and not base_url:
            transport = self.transport()
        return ClientRegistry(env=env, transport=transport, **overrides)

    def reset(self) -> None:
        """Forget every object, fault and webhook."""
        for emulator in (self.github, self.linear, self.slack, self.codegen):
            emulator.reset()
        self.core.faults.clear()
        self.core.webhooks.outbox.clear()

    # -- background work ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start moving agent runs on and delivering webhooks."""
        await self.core.webhooks.start()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="sandbox-ticker")

    async def stop(self) -> None:
        """Stop the background work."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.core.webhooks.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _tick(self) -> None:
        while True:
            self.codegen.advance()
            await asyncio.sleep(self._tick_interval)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # -- control API (/_sandbox) --------------------------------------------------------------

    def _control_routes(self) -> list[Route]:
        return [
            Route("/state", self._state, methods=["GET"]),
            Route("/reset", self._reset, methods=["POST"]),
            Route("/faults", self._faults, methods=["POST", "DELETE", "GET"]),
            Route("/webhooks", self._webhooks, methods=["GET"]),
            Route("/github/issues", self._github_issue, methods=["POST"]),
            Route("/linear/issues", self._linear_issue, methods=["POST"]),
            Route("/linear/issues/{issue_id}", self._linear_update, methods=["POST"]),
            Route("/slack/channels", self._slack_channel, methods=["POST"]),
            Route("/slack/messages", self._slack_message, methods=["POST"]),
            Route("/slack/press", self._slack_press, methods=["POST"]),
            Route("/codegen/finish", self._codegen_finish, methods=["POST"]),
        ]

    async def _state(self, request: Request) -> Response:
        return json_response(
            {
                "github": {
                    name: {"issues": len(r.issues), "comments": len(r.comments)}
                    for name, r in self.github.repos.items()
                },
                "linear": {
                    "issues": [self.linear.issue_json(i) for i in self.linear.issues.values()],
                    "comments": len(self.linear.comments),
                },
                "slack": {cid: len(m) for cid, m in self.slack.messages.items()},
                "codegen": {"runs": [self.codegen.public(r) for r in self.codegen.runs.values()]},
                "faults": len(self.faults.active),
            }
        )

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return json_response({"ok": True})

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method == "POST":
            body = await request.json()
            self.inject(body.pop("kind"), **body)
        return json_response(
            {
                "active": [
                    {
                        "kind": f.kind,
                        "platform": f.platform,
                        "path": f.path,
                        "fired": f.fired,
                        "times": f.times,
                    }
                    for f in self.faults.active
                ]
            }
        )

    async def _webhooks(self, request: Request) -> Response:
        return json_response(
            [
                {
                    "id": d.id,
                    "platform": d.platform,
                    "event": d.event,
                    "status": d.status,
                    "attempts": d.attempts,
                    "error": d.error,
                }
                for d in self.outbox
            ]
        )

    async def _github_issue(self, request: Request) -> Response:
        body = await request.json()
        issue = self.github.create_issue(
            body["repo"],
            body["title"],
            body.get("body", ""),
            author=body.get("author", "octocat"),
            labels=body.get("labels"),
        )
        return json_response(issue, 201)

    async def _linear_issue(self, request: Request) -> Response:
        body = await request.json()
        issue = self.linear.create_issue(
            body["title"],
            body.get("description", ""),
            state=body.get("state", "Todo"),
            labels=body.get("labels"),
        )
        return json_response(issue, 201)

    async def _linear_update(self, request: Request) -> Response:
        body = await request.json()
        linear = self.linear
        fields: dict[str, Any] = {}
        if body.get("add_labels"):
            fields["addedLabelIds"] = [linear.label_named(n)["id"] for n in body["add_labels"]]
        if body.get("remove_labels"):
            fields["removedLabelIds"] = [linear.label_named(n)["id"] for n in body["remove_labels"]]
        if body.get("state"):
            issue = linear.op_issue({"id": request.path_params["issue_id"]})
            fields["stateId"] = linear.state_named(issue["team"]["id"], body["state"])["id"]
        issue = linear.update_issue(request.path_params["issue_id"], fields, actor=linear.human)
        return json_response(issue)

    async def _slack_channel(self, request: Request) -> Response:
        body = await request.json()
        channel_id = self.slack.add_channel(body["name"])
        return json_response({"id": channel_id, "name": body["name"]}, 201)

    async def _slack_message(self, request: Request) -> Response:
        body = await request.json()
        message = self.slack.post(body["channel"], body["text"], user=body.get("user", "U0ADA"))
        return json_response(message, 201)

    async def _slack_press(self, request: Request) -> Response:
        body = await request.json()
        payload = self.slack.press(
            body["channel"], body["ts"], body["action_id"], user=body.get("user", "U0ADA")
        )
        return json_response(payload)

    async def _codegen_finish(self, request: Request) -> Response:
        self.codegen.finish_all()
        return json_response({"ok": True})
