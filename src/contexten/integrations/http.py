"""The shared outbound HTTP layer every platform client sends through.

One :class:`PlatformHTTP` per platform and credential owns one pooled ``httpx.AsyncClient`` and
the safety gear around it. A request goes through, in order::

    SSRF guard ─▶ rate limiter (wait for budget) ─▶ circuit breaker (fail fast while open)
      ─▶ httpx (pooled) ─▶ rate limiter learns from the headers ─▶ adapter judges the response
      ─▶ retry with capped, jittered backoff if the error is transient (and replay-safe)

What differs per platform (auth header, which budget a call spends, which headers announce the
budget, what an error response looks like) is a :class:`PlatformAdapter`; everything else is
here, once. httpx exceptions are translated in :mod:`contexten.integrations.errors`.

Deadlines: wrap calls in :func:`deadline` to bound how long they may wait for rate limits and
backoff; past it they raise instead of waiting (the workflow engine reschedules the step).
"""

from __future__ import annotations

import contextvars
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from contexten.clock import Clock, WallClock
from contexten.exceptions import (
    CircuitOpen,
    PlatformError,
    PlatformUnavailable,
    RateLimited,
    SSRFBlocked,
)
from contexten.integrations.errors import error_for_status, translate_httpx_error
from contexten.integrations.ssrf import Resolver, SSRFGuard
from contexten.observability import tracing
from contexten.resilience.bulkhead import Bulkhead
from contexten.resilience.circuit_breaker import BreakerConfig, BreakerHealth, CircuitBreaker
from contexten.resilience.rate_limit import AdaptiveRateLimiter, BucketState, RateLimitUpdate
from contexten.resilience.retry import RetryPolicy

__all__ = [
    "HTTPSettings",
    "PlatformAdapter",
    "PlatformHTTP",
    "PlatformHealth",
    "current_deadline",
    "deadline",
    "parse_retry_after",
]

_MAX_REDIRECTS = 3
_MAX_THROTTLED_ATTEMPTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "contexten_http_deadline", default=None
)


@contextmanager
def deadline(seconds: float, *, clock: Clock | None = None) -> Iterator[float]:
    """Bound the platform calls made inside the block to ``seconds`` from now.

    Calls that would have to wait for a rate limit or a backoff past the deadline raise
    instead (:class:`~contexten.exceptions.RateLimited` or the last transient error). Nested
    deadlines keep the earlier one. Yields the deadline on the clock's monotonic scale.
    """
    now = (clock or WallClock()).monotonic()
    outer = _deadline.get()
    value = now + seconds if outer is None else min(outer, now + seconds)
    token = _deadline.set(value)
    try:
        yield value
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    """The innermost :func:`deadline` in force (monotonic seconds), or ``None``."""
    return _deadline.get()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), or ``None``."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    """How one platform client connects and behaves. Every field has a sensible default.

    Attributes:
        base_url: the API root (point it at the sandbox in tests and demos).
        token: the credential (each client type reads its own environment variable).
        max_connections: the pool's bound on open connections.
        max_keepalive_connections: idle connections kept for reuse.
        keepalive_expiry: seconds an idle connection is kept.
        connect_timeout: seconds to establish a connection.
        timeout: seconds for each read/write/pool wait.
        retry: backoff for transient errors (connect errors, 5xx, 429).
        breaker: the circuit breaker's thresholds.
        max_rate_limit_wait: the longest a call waits for rate-limit budget before raising.
        max_pending: calls allowed to queue for a connection once all ``max_connections`` are
            busy; past it calls fail fast with :class:`~contexten.exceptions.BulkheadFull`.
        allowed_hosts: hosts besides the base URL's that the client may call.
        allow_private_network: allow private addresses for a host name base URL.
        user_agent: sent on every request (GitHub requires one).
    """

    base_url: str
    token: str | None = None
    max_connections: int = 100
    max_keepalive_connections: int = 20
    keepalive_expiry: float = 30.0
    connect_timeout: float = 10.0
    timeout: float = 30.0
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            initial_interval=0.5, maximum_interval=20.0, maximum_attempts=5
        )
    )
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_rate_limit_wait: float = 60.0
    max_pending: int = 100_000
    allowed_hosts: tuple[str, ...] = ()
    allow_private_network: bool = False
    user_agent: str = "contexten/0.1 (+https://github.com/contexten)"


class PlatformAdapter(ABC):
    """What one platform does differently: auth, budgets, and what a failure looks like.

    Attributes:
        platform: the platform's name.
        clock: the owning client's clock (set by :class:`PlatformHTTP`), for reset times.
    """

    platform: str = ""
    clock: Clock = WallClock()

    def now(self) -> float:
        """The current Unix time, from :attr:`clock` (to turn reset timestamps into waits)."""
        return self.clock.now().timestamp()

    @abstractmethod
    def auth_headers(self, token: str | None) -> dict[str, str]:
        """Headers that authenticate a request with ``token``."""

    def bucket(self, method: str, url: httpx.URL) -> str:
        """Which rate-limit budget a call spends (default: one budget)."""
        return "default"

    def rate_limit_updates(self, response: httpx.Response) -> list[RateLimitUpdate]:
        """What the response's headers say about the budget (default: ``Retry-After``)."""
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if response.status_code == 429:
            bucket = self.bucket(response.request.method, response.request.url)
            return [RateLimitUpdate(bucket=bucket, retry_after=retry_after or 1.0)]
        return []

    def error_for(self, response: httpx.Response) -> PlatformError | None:
        """The error a response means, or ``None`` if it is a success."""
        if response.status_code < 400:
            return None
        return error_for_status(
            response.status_code,
            self.error_message(response),
            platform=self.platform,
            retry_after=parse_retry_after(response.headers.get("retry-after"))
            if response.status_code in (403, 429)
            else None,
        )

    def error_message(self, response: httpx.Response) -> str:
        """The platform's own words for a failed response."""
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        if isinstance(body, dict):
            for key in ("message", "error", "detail"):
                if body.get(key):
                    return f"HTTP {response.status_code}: {body[key]}"
        return f"HTTP {response.status_code}"


@dataclass(frozen=True, slots=True)
class PlatformHealth:
    """What ``/readyz`` and metrics show about one platform client."""

    platform: str
    breaker: BreakerHealth
    rate_limits: Mapping[str, BucketState]
    open_connections: int

    @property
    def available(self) -> bool:
        """Whether calls may go out now (the breaker is not open)."""
        return self.breaker.available


class PlatformHTTP:
    """One platform and credential: the pooled client with SSRF guard, rate limits, breaker
    and retries.

    Args:
        adapter: the platform's specifics.
        settings: connection and behaviour settings.
        transport: an httpx transport to send through (tests pass an ``ASGITransport`` into
            the sandbox); default: httpx's pooled HTTP transport.
        clock: where waits and backoff sleep (tests pass a virtual clock).
        rng: randomness for backoff jitter.
        resolver: name resolution for the SSRF guard.
    """

    def __init__(
        self,
        adapter: PlatformAdapter,
        settings: HTTPSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.adapter = adapter
        self.settings = settings
        self.platform = adapter.platform
        self._clock = clock or WallClock()
        self._rng = rng or random.Random()
        adapter.clock = self._clock
        self.guard = SSRFGuard(
            settings.base_url,
            settings.allowed_hosts,
            allow_private_network=settings.allow_private_network,
            resolver=resolver,
        )
        self.breaker = CircuitBreaker(
            self.platform,
            settings.breaker,
            clock=self._clock,
            is_failure=lambda e: isinstance(e, PlatformUnavailable),
            platform=self.platform,
        )
        self.limiter = AdaptiveRateLimiter(
            self.platform, clock=self._clock, max_wait=settings.max_rate_limit_wait
        )
        # Callers queue here (FIFO, bounded), not inside httpx's pool: its wait list is scanned
        # on every change, which costs quadratic time when thousands of calls wait at once.
        self.bulkhead = Bulkhead(
            self.platform, settings.max_connections, max_queue=settings.max_pending
        )
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
            keepalive_expiry=settings.keepalive_expiry,
        )
        if transport is None:
            transport = httpx.AsyncHTTPTransport(limits=limits)
        self._transport = transport
        headers = {"User-Agent": settings.user_agent, "Accept": "application/json"}
        headers.update(adapter.auth_headers(settings.token))
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            transport=transport,
            limits=limits,
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            headers=headers,
            follow_redirects=False,
        )

    @property
    def clock(self) -> Clock:
        """The clock this client waits on."""
        return self._clock

    def health(self) -> PlatformHealth:
        """A snapshot for ``/readyz`` and metrics."""
        return PlatformHealth(
            platform=self.platform,
            breaker=self.breaker.health(),
            rate_limits=self.limiter.snapshot(),
            open_connections=self.open_connections(),
        )

    def open_connections(self) -> int:
        """Connections the pool holds now (0 for transports without a pool)."""
        pool = getattr(self._transport, "_pool", None)
        connections = getattr(pool, "connections", None)
        return len(connections) if connections is not None else 0

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()

    async def __aenter__(self) -> PlatformHTTP:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        bucket: str | None = None,
        replay_safe: bool | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send one logical request, with waits and retries; return the successful response.

        Args:
            method: the HTTP method.
            url: a path under the base URL, or an absolute URL on an allowed host.
            json: a JSON body.
            params: query parameters.
            data: a form body.
            headers: extra headers (e.g. ``Idempotency-Key``).
            bucket: the rate-limit budget (default: the adapter's choice).
            replay_safe: whether the request may be resent after a failure that may have
                reached the platform (default: true for every method but POST). An unsafe
                request is still retried when nothing reached the platform (connect errors,
                429, an open breaker never sent it).
            retry: overrides the settings' retry policy.

        Raises:
            PlatformRequestError: the platform refused the request (not retried).
            RateLimited: the rate-limit wait would pass the deadline or ``max_rate_limit_wait``.
            PlatformUnavailable: transient failures outlasted the retry policy.
            CircuitOpen: the breaker is open.
            SSRFBlocked: the target is not allowed; nothing was sent.
        """
        policy = retry or self.settings.retry
        safe = replay_safe if replay_safe is not None else method.upper() != "POST"
        request = self._client.build_request(
            method, url, json=json, params=params, data=data, headers=headers
        )
        budget = bucket or self.adapter.bucket(method, request.url)
        attempt = 0
        throttled = 0
        last: PlatformError | None = None
        while True:
            try:
                return await self._attempt(request, budget)
            except RateLimited as error:
                # No status: our own limiter refused to wait that long. With a status: the
                # platform throttled us, the limiter learned its Retry-After, and the next
                # acquire waits for it (without spending a retry attempt).
                if error.status is None or throttled >= _MAX_THROTTLED_ATTEMPTS:
                    raise
                throttled += 1
                self.limiter.update(RateLimitUpdate(bucket=budget, retry_after=error.retry_after))
            except PlatformError as error:
                if isinstance(error, CircuitOpen) and last is not None:
                    # Our own retries opened the breaker: say what the platform said.
                    raise error from last
                attempt += 1
                last = error
                if not self._should_retry(error, attempt, policy, safe):
                    raise
                await self._backoff(error, policy.delay(attempt, self._rng))

    def _should_retry(
        self, error: PlatformError, attempt: int, policy: RetryPolicy, safe: bool
    ) -> bool:
        if isinstance(error, CircuitOpen | SSRFBlocked):
            return False
        if error.maybe_applied and not safe:
            return False
        return policy.should_retry(attempt, error)

    async def _backoff(self, error: PlatformError, delay: float) -> None:
        limit = current_deadline()
        if limit is not None and self._clock.monotonic() + delay > limit:
            raise error
        await self._clock.sleep(delay)

    async def _attempt(self, request: httpx.Request, budget: str) -> httpx.Response:
        for _ in range(_MAX_REDIRECTS + 1):
            await self.guard.check(request.url, platform=self.platform)
            await self.limiter.acquire(budget, deadline=current_deadline())
            response = await self._send(request)
            if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                request = self._redirected(request, response)
                continue
            return response
        raise PlatformUnavailable("too many redirects", platform=self.platform)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        permit = self.breaker.allow()
        span = tracing.client_span(
            self.platform, request.method, request.url.host, request.url.path
        )
        try:
            with span as traced:
                async with self.bulkhead:
                    response = await self._client.send(request)
                if traced is not None:
                    traced.set_attribute("http.response.status_code", response.status_code)
        except httpx.HTTPError as exc:
            error = translate_httpx_error(exc, platform=self.platform)
            self.breaker.record_failure(error, permit)
            raise error from exc
        except BaseException:
            self.breaker.release(permit)
            raise
        for update in self.adapter.rate_limit_updates(response):
            self.limiter.update(update)
        refusal = self.adapter.error_for(response)
        if refusal is None:
            self.breaker.record_success(permit)
            return response
        self.breaker.record_failure(refusal, permit)
        raise refusal

    def _redirected(self, request: httpx.Request, response: httpx.Response) -> httpx.Request:
        location = request.url.join(response.headers["location"])
        method = request.method
        if response.status_code == 303 or (
            response.status_code in (301, 302) and method not in ("GET", "HEAD")
        ):
            # Following would turn the call into a different one; better to say so.
            raise PlatformUnavailable(
                f"{method} {request.url} redirected ({response.status_code}) to {location}",
                platform=self.platform,
                status=response.status_code,
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        return self._client.build_request(
            method, location, content=request.content, headers=headers
        )
