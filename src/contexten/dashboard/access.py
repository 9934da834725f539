"""Who is looking at the dashboard, what they may do, and proof that a form came from it.

The dashboard uses the same tokens, roles and ONE permission check as the API
(:func:`contexten.security.allowed`); what it adds is what a browser needs:

* **A session cookie.** ``/login`` (a form, or ``?token=`` from the URL ``contexten serve``
  prints) checks the token and, if it is active, stores it in the ``contexten_session``
  cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends
  it), ``Secure`` over HTTPS, and redirects to a URL without the token. Every request checks
  the cookie's token again through the registry, so a revoked token logs the browser out
  within a second or two, in every process. ``Authorization: Bearer`` works too (curl).
* **CSRF tokens.** Every state-changing form carries ``csrf_token``: an HMAC of a fixed
  label keyed by the session's token. It needs no server state (any process can check it)
  and no other site can compute it; a POST without the right one is refused with 403
  before anything else happens. Requests authenticated by an ``Authorization`` header
  carry no ambient credential and need none.
* **Audit.** A refused login, a refused action and every action taken are recorded as
  ``contexten.audit.*`` events through :func:`contexten.security.record_audit`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from starlette.requests import Request

from contexten.observability.logging import get_logger
from contexten.security import (
    AUTH_DENIED,
    AUTH_FAILED,
    AUTH_THROTTLED,
    FailureThrottle,
    Principal,
    allowed,
    audit_type,
    hidden_streams,
    record_audit,
)
from contexten.store.base import EventStore

__all__ = [
    "CSRF_FIELD",
    "SESSION_COOKIE",
    "Authenticator",
    "Gate",
    "Visitor",
    "client_of",
    "csrf_token",
    "csrf_valid",
    "presented_token",
]

SESSION_COOKIE: Final = "contexten_session"
CSRF_FIELD: Final = "csrf_token"
_CSRF_LABEL: Final = b"contexten-dashboard-csrf-v1"
_BEARER: Final = "bearer "
_MAX_TOKEN: Final = 512

_log = get_logger("contexten.dashboard")


class Authenticator(Protocol):
    """Checks a presented token (:class:`contexten.security.TokenRegistry` fits)."""

    async def authenticate(self, presented: str) -> Principal | None:
        """Who ``presented`` identifies, or None."""


def csrf_token(session_token: str) -> str:
    """The CSRF token of the session whose credential is ``session_token``."""
    return hmac.new(session_token.encode("utf-8", "surrogatepass"), _CSRF_LABEL, hashlib.sha256)\
        .hexdigest()  # fmt: skip


def csrf_valid(session_token: str, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (constant-time)."""
    if not presented or len(presented) > 128:
        return False
    return hmac.compare_digest(csrf_token(session_token), presented)


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who sent a request, and how.

    Attributes:
        principal: the token's principal (None: not logged in).
        token: the credential presented (never rendered; used for the CSRF token).
        by_cookie: the credential came from the session cookie (so forms need CSRF).
    """

    principal: Principal | None
    token: str | None = None
    by_cookie: bool = False

    @property
    def csrf(self) -> str:
        """The CSRF token to put in this visitor's forms ("" when not logged in)."""
        return csrf_token(self.token) if self.token else ""

    def can(self, action: str) -> bool:
        """The one permission check (:func:`contexten.security.allowed`)."""
        return allowed(self.principal, action)

    @property
    def hidden_streams(self) -> tuple[str, ...]:
        """The prefixes of the streams this visitor may not see (as in the events API)."""
        return hidden_streams(self.principal)


def client_of(request: Request) -> str:
    """The client's address, as audit events record it."""
    return request.client.host if request.client else "unknown"


def presented_token(request: Request) -> tuple[str | None, bool]:
    """The credential of ``request`` (header first, then the cookie) and whether it is the
    cookie."""
    header = request.headers.get("authorization", "")
    if header[: len(_BEARER)].lower() == _BEARER and header[len(_BEARER) :].strip():
        return header[len(_BEARER) :].strip()[:_MAX_TOKEN], False
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie[:_MAX_TOKEN], True
    return None, False


class Gate:
    """Authentication, throttling and audit for the dashboard's requests.

    Args:
        store: where audit events go.
        authenticator: returns the authenticator in use (the server's token registry, which
            exists once the ASGI app is built, hence a function).
        throttle: counts failed logins per client (429 beyond its limit).
    """

    def __init__(
        self,
        store: Callable[[], EventStore],
        authenticator: Callable[[Request], Authenticator],
        throttle: FailureThrottle,
    ) -> None:
        self._store = store
        self._authenticator = authenticator
        self.throttle = throttle

    async def visitor(self, request: Request) -> Visitor:
        """Who sent ``request`` (an anonymous visitor when no valid credential came).

        Raises:
            StoreError: the store cannot be read to check the token (the caller answers 503).
        """
        token, by_cookie = presented_token(request)
        if token is None:
            return Visitor(None)
        principal = await self._authenticator(request).authenticate(token)
        if principal is None:
            return Visitor(None)
        return Visitor(principal, token, by_cookie)

    async def login(self, request: Request, token: str) -> Principal | None:
        """Check a token typed into the login form (or given as ``?token=``); audit and
        count a failure."""
        principal = await self._authenticator(request).authenticate(token[:_MAX_TOKEN])
        if principal is None:
            await self.audit(request, AUTH_FAILED, None, "401", detail="dashboard login refused")
            if self.throttle.failed(client_of(request)):
                await self.audit(request, AUTH_THROTTLED, None, "429", detail="failure limit")
        return principal

    def retry_after(self, request: Request) -> int | None:
        """Seconds this client must wait before trying to log in again, if throttled."""
        return self.throttle.retry_after(client_of(request))

    async def denied(self, request: Request, visitor: Visitor, action: str) -> None:
        """Record that ``visitor`` was refused ``action``."""
        await self.audit(request, AUTH_DENIED, visitor.principal, "403", detail=action)

    async def acted(
        self,
        request: Request,
        visitor: Visitor,
        action: str,
        target: str,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        """Record an action taken from the dashboard (``contexten.audit.<action>``)."""
        await self.audit(
            request, audit_type(action), visitor.principal, outcome, target=target, detail=detail
        )

    async def audit(
        self,
        request: Request,
        event_type: str,
        principal: Principal | None,
        outcome: str,
        *,
        target: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Append one audit event; a failure to do so is logged, not raised (the answer is
        already decided), exactly as the API's middleware does."""
        try:
            await record_audit(
                self._store(),
                event_type,
                principal=principal,
                client=client_of(request),
                outcome=outcome,
                target=target,
                detail=detail,
                request=(request.method, request.url.path),
            )
        except Exception as e:
            _log.error("audit event not recorded", audit_type=event_type, error=type(e).__name__)
