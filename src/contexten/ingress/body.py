"""Read a request body under a size cap and a deadline, before buffering it.

A webhook endpoint is on the internet: a client may announce 10 GB, stream forever, or
trickle a byte a second. :func:`read_body` refuses an announced ``Content-Length`` over the cap
without reading anything, counts bytes while it reads the ASGI stream (chunked bodies have
no length), and stops at the first chunk that passes the cap, so at most ``limit`` plus one
chunk is ever held. A deadline bounds the whole read.

Many large bodies at once would still add up (twelve unsigned 24 MB bodies are 288 MB before
one signature is checked): a :class:`ByteBudget` bounds the bytes of large bodies held
across requests; a request waits for its share before it reads, while TCP flow control
holds its sender back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request

from contexten.exceptions import BodyTimeout, MalformedPayload, PayloadTooLarge

__all__ = ["ByteBudget", "MiB", "announced_length", "parse_length", "read_body", "read_received"]

MiB: Final = 1024 * 1024


def announced_length(request: Request) -> int | None:
    """The request's ``Content-Length``, or None when it has none (a chunked body).

    Raises:
        MalformedPayload: the header is not a number.
    """
    return parse_length(request.headers.get("content-length"))


def parse_length(header: str | None) -> int | None:
    """A ``Content-Length`` value as a number, or None when there is none.

    Raises:
        MalformedPayload: the header is not a number.
    """
    if header is None:
        return None
    header = header.strip()
    if not header.isascii() or not header.isdigit() or len(header) > 18:
        raise MalformedPayload("Content-Length is not a number")
    return int(header)


async def read_body(request: Request, *, limit: int, timeout: float | None = None) -> bytes:
    """The whole body of ``request``, at most ``limit`` bytes, within ``timeout`` seconds.

    Raises:
        PayloadTooLarge: ``Content-Length`` announces more than ``limit``, or the stream
            passes it.
        MalformedPayload: ``Content-Length`` is not a number, or the client disconnected
            before the body ended.
        BodyTimeout: the body did not arrive within ``timeout``.
    """
    announced = announced_length(request)
    if announced is not None and announced > limit:
        raise PayloadTooLarge(f"body of {announced} bytes announced; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body passed the limit of {limit} bytes")
                if chunk:
                    chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"body not received within {timeout} s") from None
    except ClientDisconnect:
        raise MalformedPayload("client disconnected before the body ended") from None
    return _joined(chunks)


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
"""An ASGI ``receive`` callable."""


async def read_received(receive: Receive, *, limit: int, timeout: float | None = None) -> bytes:
    """Like :func:`read_body`, straight from an ASGI ``receive`` (the webhook fast path).

    The caller has already refused an announced ``Content-Length`` over ``limit``; the
    stream is still counted against it, as a chunked body has no length.

    Raises:
        PayloadTooLarge: the stream passed ``limit``.
        MalformedPayload: the client disconnected before the body ended.
        BodyTimeout: the body did not arrive within ``timeout``.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "http.request":
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"body passed the limit of {limit} bytes")
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                elif kind == "http.disconnect":
                    raise MalformedPayload("client disconnected before the body ended")
    except TimeoutError:
        raise BodyTimeout(f"body not received within {timeout} s") from None
    return _joined(chunks)


def _joined(chunks: list[bytes]) -> bytes:
    """The body in one ``bytes``: the one chunk itself, else one copy of them all.

    (Before, a ``bytearray`` grew chunk by chunk and was then copied to ``bytes``: two
    copies of a large body alive at once at the end.)
    """
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


class ByteBudget:
    """A number of bytes shared by concurrent requests, granted first come, first served.

    A request asks for its whole share at once (never a part and then more), so two waiting
    requests can never each hold what the other needs. A share larger than the budget is
    cut to the budget: it then runs alone, but it runs.

    Args:
        total: the bytes to share.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a byte budget must be positive")
        self.total = total
        self.available = total
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int) -> int:
        """Wait for ``size`` bytes of the budget; return the share held (to :meth:`release`).

        A caller cancelled while waiting holds nothing.
        """
        size = min(max(size, 0), self.total)
        if not self._waiters and self.available >= size:
            self.available -= size
            return size
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, granted))
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self.release(size)  # granted just as the waiter gave up
            else:
                self._waiters.remove((size, granted))
                self._grant()  # a smaller request behind it may fit now
            raise
        return size

    def release(self, share: int) -> None:
        """Give back a share returned by :meth:`acquire`."""
        self._release(share)

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the budget for the block, waiting for them if need be."""
        share = await self.acquire(size)
        try:
            yield
        finally:
            self.release(share)

    def _release(self, size: int) -> None:
        self.available += size
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            size, granted = self._waiters.popleft()
            if granted.done():
                continue
            self.available -= size
            granted.set_result(None)
