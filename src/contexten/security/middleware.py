"""The ASGI middleware that puts every route behind the Host check and a bearer token.

Each request goes through, in order:

1. ``POST /webhooks/...`` passes straight through: platforms sign their deliveries and the
   ingress checks the signature; nothing here adds work to that hot path.
2. The ``Host`` header must name this server (:mod:`contexten.security.hosts`), else 400.
3. The route's rule says which action it needs (:data:`RouteAction`); a public route (None)
   passes. A path that matches no route still needs a valid token (so the 404s tell an
   anonymous caller nothing).
4. A client over its failure limit gets 429 with ``Retry-After`` (:mod:`.throttle`).
5. ``Authorization: Bearer <token>``: missing or not an active token: 401 (audited, counted
   toward the limit); a token whose role does not allow the action: 403 (audited). The
   store unreachable while the token cache is stale: 503 (fail closed).
6. The request runs with its :class:`~contexten.security.roles.Principal` in
   ``request.state.principal`` (read it with :func:`principal_of`); when the action needs
   operator or admin, an audit event records it with the answer's status.

Only the header is accepted: a ``?token=`` in a URL ends up in browser history, proxy logs
and ``Referer`` headers (a dashboard may turn one into a cookie, then redirect it away).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contexten.clock import Clock
from contexten.events.codec import encode_json
from contexten.exceptions import StoreError
from contexten.observability.logging import get_logger
from contexten.security.audit import (
    AUTH_DENIED,
    AUTH_FAILED,
    AUTH_THROTTLED,
    audit_type,
    record_audit,
)
from contexten.security.hosts import AllowedHosts
from contexten.security.roles import Principal, Role, allowed, required_role
from contexten.security.throttle import FailureThrottle
from contexten.security.tokens import TokenRegistry
from contexten.store.base import EventStore

__all__ = [
    "AUTHENTICATED",
    "RouteAction",
    "SecurityMiddleware",
    "principal_of",
    "verbose_requested",
]

RouteAction = str | None | Callable[[Scope], "str | None"]
"""What a route needs: an action of :data:`~contexten.security.roles.ACTIONS`, None for a
public route, or a function of the request's scope answering one of those (``/readyz``
is public, ``/readyz?verbose=1`` needs ``health:read``)."""

AUTHENTICATED: Final = "*authenticated"
"""The pseudo-action of a path no route matches: any valid token, whatever its role."""

_WEBHOOKS: Final = "/webhooks/"
_BEARER: Final = "bearer "
_JSON: Final = (b"content-type", b"application/json")

_log = get_logger("contexten.security")


def principal_of(request: Request) -> Principal | None:
    """Who the request acts as (None on a public route)."""
    return getattr(request.state, "principal", None)


def verbose_requested(scope: Scope) -> bool:
    """Whether the query string asks for ``verbose`` details (``?verbose=1``)."""
    query = scope.get("query_string", b"").decode("latin-1")
    return any(k == "verbose" and v.lower() in ("1", "true", "yes") for k, v in parse_qsl(query))


async def _answer(
    send: Send, status: int, error: str, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = encode_json({"error": error, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class SecurityMiddleware:
    """Host check, bearer authentication, roles, throttling and audit (module docstring).

    Args:
        app: the ASGI app to protect.
        rules: every route of ``app`` with what it needs.
        tokens: checks presented tokens.
        hosts: the ``Host`` names this server answers to.
        throttle: counts authentication failures per client.
        store: where audit events go.
        clock: where audit times come from.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: Sequence[tuple[BaseRoute, RouteAction]],
        tokens: TokenRegistry,
        hosts: AllowedHosts,
        throttle: FailureThrottle,
        store: EventStore,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.rules = tuple(rules)
        self.tokens = tokens
        self.hosts = hosts
        self.throttle = throttle
        self.store = store
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "POST" and path.startswith(_WEBHOOKS):
            await self.app(scope, receive, send)  # signed; verified by the ingress itself
            return
        if not self.hosts.allows(_header(scope, b"host")):
            await _answer(send, 400, "bad request", "this Host is not allowed")
            return
        action = self._action(scope)
        if action is None:
            await self.app(scope, receive, send)
            return
        principal = await self._authorize(scope, send, action)
        if principal is None:
            return
        scope.setdefault("state", {})["principal"] = principal
        if action != AUTHENTICATED and required_role(action) >= Role.OPERATOR:
            await self._run_audited(scope, receive, send, principal, action)
        else:
            await self.app(scope, receive, send)

    def _action(self, scope: Scope) -> str | None:
        # The route the router will run: the first FULL match (path and method). One path
        # may carry routes of several methods with different actions (GET to read, POST to
        # publish), so a path-only (PARTIAL) match counts only when no route fully matches
        # (the router then answers 405, behind the first such route's action).
        partial: tuple[BaseRoute, RouteAction] | None = None
        for route, rule in self.rules:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return rule(scope) if callable(rule) else rule
            if match is Match.PARTIAL and partial is None:
                partial = (route, rule)
        if partial is not None:
            rule = partial[1]
            return rule(scope) if callable(rule) else rule
        return AUTHENTICATED

    def _client(self, scope: Scope) -> str:
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    async def _authorize(self, scope: Scope, send: Send, action: str) -> Principal | None:
        """The request's principal, or None after answering 401/403/429/503 for it."""
        client = self._client(scope)
        wait = self.throttle.retry_after(client)
        if wait is not None:
            await _answer(
                send,
                429,
                "too many failed authentications",
                f"retry in {wait} s",
                [(b"retry-after", str(wait).encode())],
            )
            return None
        authorization = _header(scope, b"authorization") or ""
        principal: Principal | None = None
        presented = authorization[len(_BEARER) :].strip()
        if authorization[: len(_BEARER)].lower() == _BEARER and presented:
            try:
                principal = await self.tokens.authenticate(presented)
            except StoreError as e:
                _log.error("cannot check a token: the store is unavailable", error=type(e).__name__)
                await _answer(
                    send, 503, "store unavailable", "credentials cannot be checked now",
                    [(b"retry-after", b"1")],
                )  # fmt: skip
                return None
        if principal is None:
            reason = "no bearer token" if not presented else "not an active token"
            await self._audit(AUTH_FAILED, scope, None, "401", reason)
            if self.throttle.failed(client):
                await self._audit(AUTH_THROTTLED, scope, None, "429", "failure limit reached")
            await _answer(
                send,
                401,
                "unauthorized",
                "send Authorization: Bearer <token> (contexten tokens create)",
                [(b"www-authenticate", b'Bearer realm="contexten"')],
            )
            return None
        if action != AUTHENTICATED and not allowed(principal, action):
            needed = required_role(action)
            await self._audit(AUTH_DENIED, scope, principal, "403", f"{action} needs {needed}")
            await _answer(send, 403, "forbidden", f"this needs the {needed} role")
            return None
        return principal

    async def _run_audited(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, action: str
    ) -> None:
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            await self._audit(audit_type(action), scope, principal, str(status), None)

    async def _audit(
        self,
        event_type: str,
        scope: Scope,
        principal: Principal | None,
        outcome: str,
        detail: str | None,
    ) -> None:
        try:
            await record_audit(
                self.store,
                event_type,
                principal=principal,
                client=self._client(scope),
                outcome=outcome,
                detail=detail,
                request=(scope["method"], scope["path"]),
                clock=self.clock,
            )
        except Exception as e:  # the answer does not depend on it; the log says it is missing
            _log.error(
                "audit event not recorded",
                audit_type=event_type,
                outcome=outcome,
                error=type(e).__name__,
            )
