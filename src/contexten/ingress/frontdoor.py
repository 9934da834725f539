"""The front door: connection limits that keep the server answering platforms under attack.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) but nothing else at the
connection level: a connection that never sends a byte, or sends its headers a byte a
second (slowloris), stays open forever, and header sections may be as large as the parser
accepts. Its ``limit_concurrency`` counts those idle connections too and refuses the *next
request* with 503, so a few thousand idle sockets would turn the platforms away, not the
attackers. This module adds, on top of uvicorn's own HTTP protocols (``httptools`` and
``h11``), per :class:`FrontDoorLimits`:

* **idle timeout**: a new connection that sends nothing within ``keep_alive_timeout`` is
  closed (the same timeout uvicorn applies between requests of a kept-alive connection);
* **header timeout**: a request's headers must be complete within ``header_timeout`` of the
  connection opening (or of the previous response); otherwise ``408`` and close;
* **header cap**: a header section over ``max_header_bytes`` is answered ``431`` and closed,
  having buffered at most the cap plus one read;
* **connection cap**: at most ``max_connections`` connections are open. A new connection
  beyond it *evicts* the connection that has waited longest for its request headers (an
  idle or slow client: what an attacker holds), so a platform that connects and sends its
  request at once always gets in. Only when every open connection is busy with a request is
  the newcomer refused, with ``503`` and ``Retry-After``, before anything is read.

:func:`raise_open_files_limit` lifts the process's open-files soft limit to its hard limit,
so the connection cap, not ``EMFILE`` at ``accept()``, is what bounds connections.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import h11
import uvicorn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from uvicorn.protocols.http.h11_impl import H11Protocol

from contexten.observability.logging import get_logger

__all__ = [
    "ConnectionCollector",
    "FrontDoorConfig",
    "FrontDoorLimits",
    "protocol_class",
    "raise_open_files_limit",
]

_log = get_logger("contexten.frontdoor")

_REASONS: Final = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class FrontDoorLimits:
    """Connection-level limits (see the module docstring).

    Attributes:
        keep_alive_timeout: seconds a connection may stay open without sending a request
            (a new one, or a kept-alive one between requests).
        header_timeout: seconds a client gets to send a request's complete headers.
        max_header_bytes: largest header section (request line and headers) accepted.
        max_connections: most connections open at once.
        retry_after: seconds the 503 refusal asks the client to wait.
    """

    keep_alive_timeout: int = 5
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 4096
    retry_after: int = 1


class _Guard:
    """What one server's connections share: how many are open, which wait for headers.

    ``waiting`` is insertion-ordered: its first entry has waited longest, and is the one a
    new connection evicts when the server is full.
    """

    def __init__(self, limits: FrontDoorLimits) -> None:
        self.limits = limits
        self.open = 0
        self.waiting: dict[_Watch, None] = {}
        self.closed: dict[str, int] = {}
        """Connections closed by the front door so far, by reason (for tests and logs)."""

    def count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def admit(self, watch: _Watch) -> bool:
        """Make room for ``watch``'s new connection; False when it must be refused."""
        if self.open >= self.limits.max_connections:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                self.count("refused")
                return False
            self.count("evicted")
            oldest.close()
        self.open += 1
        return True


class _Watch:
    """One connection's header deadline and idle timer, and its place in the guard."""

    __slots__ = ("_guard", "_header_timer", "_idle_timer", "_loop", "_transport", "done", "seen")

    def __init__(
        self, guard: _Guard, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._guard = guard
        self._transport = transport
        self._loop = loop
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.done = False
        self.seen = 0
        """Bytes received of the current request's head (0: the client is idle)."""

    def waiting(self) -> None:
        """The connection waits for a request: arm both timers, join the eviction queue."""
        if self.done:
            return
        self._cancel()
        self.seen = 0
        limits = self._guard.limits
        self._idle_timer = self._loop.call_later(limits.keep_alive_timeout, self._idle)
        self._header_timer = self._loop.call_later(limits.header_timeout, self._expired)
        self._guard.waiting[self] = None

    def received(self, size: int) -> None:
        """Bytes of a request head arrived: the client is no longer idle (but may be slow)."""
        self.seen += size
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def busy(self) -> None:
        """The request's headers are complete: no deadline, not evictable."""
        self._cancel()
        self._guard.waiting.pop(self, None)

    def close(self, status: int | None = None, message: str = "") -> None:
        """Close the connection (after a short error answer when ``status`` is given)."""
        if status is not None and not self._transport.is_closing():
            self._transport.write(_raw_response(status, message, self._guard.limits.retry_after))
        if not self._transport.is_closing():
            self._transport.close()
        self.lost()

    def lost(self) -> None:
        """The connection is gone: free its slot (idempotent)."""
        if self.done:
            return
        self.done = True
        self._cancel()
        self._guard.waiting.pop(self, None)
        self._guard.open -= 1

    def _cancel(self) -> None:
        for timer in (self._idle_timer, self._header_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._header_timer = None

    def _idle(self) -> None:
        self._guard.count("idle")
        self.close()

    def _expired(self) -> None:
        if self.seen:
            self._guard.count("header_timeout")
            self.close(408, "request headers not received in time")
        else:
            self._guard.count("idle")
            self.close()


def _raw_response(status: int, message: str, retry_after: int) -> bytes:
    body = message.encode("ascii")
    extra = f"retry-after: {retry_after}\r\n".encode() if status == 503 else b""
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class FrontDoorConfig(uvicorn.Config):
    """uvicorn's configuration plus the front door's limits and their shared state.

    Args:
        app: the ASGI app.
        limits: the connection limits.
        http: ``"auto"`` (httptools when installed), ``"httptools"`` or ``"h11"``.
        **options: everything else :class:`uvicorn.Config` takes.
    """

    def __init__(
        self, app: Any, *, limits: FrontDoorLimits, http: str = "auto", **options: Any
    ) -> None:
        super().__init__(
            app,
            http=protocol_class(http),
            timeout_keep_alive=limits.keep_alive_timeout,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            **options,
        )
        self.limits = limits
        self.guard = _Guard(limits)

    @property
    def closed_connections(self) -> dict[str, int]:
        """Connections the front door closed so far, by reason: ``idle``, ``header_timeout``,
        ``headers_too_large``, ``evicted``, ``refused``."""
        return dict(self.guard.closed)


class ConnectionCollector(Collector):
    """Prometheus metrics of the front door, read from its state at each scrape.

    ``contexten_connections_open`` (gauge) and ``contexten_connections_closed_total{reason}``
    (counter: ``idle``, ``header_timeout``, ``headers_too_large``, ``evicted``, ``refused``):
    the shedding is visible, without a log line per attacker connection.

    Args:
        config: the server's configuration.
    """

    def __init__(self, config: FrontDoorConfig) -> None:
        self._guard = config.guard

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The current values."""
        yield GaugeMetricFamily(
            "contexten_connections_open", "HTTP connections open now.", value=self._guard.open
        )
        closed = CounterMetricFamily(
            "contexten_connections_closed",
            "HTTP connections closed or refused by the front door, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self._guard.closed.items()):
            closed.add_metric([reason], count)
        yield closed


def _guard_of(config: uvicorn.Config) -> _Guard:
    if not isinstance(config, FrontDoorConfig):
        raise TypeError("the front door's protocols need a FrontDoorConfig")
    return config.guard


def _connect(
    protocol: Any, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
) -> _Watch:
    guard = _guard_of(protocol.config)
    watch = _Watch(guard, transport, loop)
    if not guard.admit(watch):
        watch.done = True  # never counted as open
        transport.write(
            _raw_response(503, "too many connections, retry later", guard.limits.retry_after)
        )
        transport.close()
        return watch
    watch.waiting()
    return watch


class _CappedConnection(h11.Connection):
    """h11's connection, refusing a complete request head over the cap too.

    h11 itself only caps a head that is still incomplete (``max_incomplete_event_size``);
    one that arrived whole in one read would pass.
    """

    too_large = False

    def __init__(self, cap: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=cap)
        self._cap = cap

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
            if size > self._cap:
                self.too_large = True
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        return event


class _H11Protocol(H11Protocol):
    """uvicorn's h11 protocol under the front door's limits."""

    _watch: _Watch

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.conn = _CappedConnection(_guard_of(config).limits.max_header_bytes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch = _connect(self, transport, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._watch.received(len(data))
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._watch.busy()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._watch.waiting()

    def send_400_response(self, msg: str) -> None:
        cap = _guard_of(self.config).limits.max_header_bytes
        if getattr(self.conn, "too_large", False) or len(self.conn.trailing_data[0]) > cap:
            _guard_of(self.config).count("headers_too_large")
            self._watch.close(431, "request header fields too large")
            return
        super().send_400_response(msg)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools has wheels where Contexten runs
    _HttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class _HeadersTooLarge(Exception):
        """Raised from a parser callback to stop parsing an oversized header section."""

    class _HttpToolsGuarded(HttpToolsProtocol):
        """uvicorn's httptools protocol under the front door's limits."""

        _watch: _Watch
        _head_bytes: int = 0
        _in_head: bool = True
        _too_large: bool = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch = _connect(self, transport, self.loop)

        def connection_lost(self, exc: Exception | None) -> None:
            self._watch.lost()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            in_head = self._in_head
            if in_head:
                self._watch.received(len(data))
            super().data_received(data)
            # A head that never ends (one endless header value) is buffered by the parser:
            # stop once more than the cap arrived without the head completing.
            limit = _guard_of(self.config).limits.max_header_bytes
            if in_head and self._in_head and self._watch.seen > limit and not self._too_large:
                self._refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._in_head = True

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > _guard_of(self.config).limits.max_header_bytes:
                self._too_large = True
                raise _HeadersTooLarge  # the parser stops; uvicorn calls send_400_response

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._watch.busy()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # uvicorn starts the next one: still busy
            super().on_response_complete()
            if not self.transport.is_closing() and not pipelined:
                self._in_head = True
                self._watch.waiting()

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._refuse_head()
                return
            super().send_400_response(msg)

        def _refuse_head(self) -> None:
            self._too_large = True
            _guard_of(self.config).count("headers_too_large")
            self._watch.close(431, "request header fields too large")

    _HttpToolsProtocol = _HttpToolsGuarded


def protocol_class(http: str) -> type[asyncio.Protocol]:
    """The guarded uvicorn HTTP protocol for ``http`` (``auto``, ``httptools`` or ``h11``).

    Raises:
        ValueError: an unknown name, or ``httptools`` when it is not installed.
    """
    if http == "h11":
        return _H11Protocol
    if http in ("auto", "httptools"):
        if _HttpToolsProtocol is not None:
            return _HttpToolsProtocol
        if http == "auto":  # pragma: no cover - see the import above
            return _H11Protocol
        raise ValueError("http='httptools' but httptools is not installed")
    raise ValueError(f"unknown HTTP implementation {http!r} (auto, httptools or h11)")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's open-files soft limit to its hard limit; return (before, after).

    Each connection costs a file descriptor; a soft limit of 1,024 (a common default) would
    make ``accept()`` fail with ``EMFILE`` long before :attr:`FrontDoorLimits.max_connections`
    connections, and asyncio then stops accepting for a second, platforms included.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft == resource.RLIM_INFINITY or (target != resource.RLIM_INFINITY and soft >= target):
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        _log.warning("could not raise the open-files limit", soft=soft, hard=hard, error=str(e))
        return soft, soft
    return soft, target
