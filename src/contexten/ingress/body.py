"""Read a request body under a size cap and a deadline, before buffering it.

A webhook endpoint is on the internet: a client may announce 10 GB, stream forever, or
trickle a byte a second. :func:`read_body` refuses an announced ``Content-Length`` over the cap
without reading anything, counts bytes while it reads the ASGI stream (chunked bodies have
no length), and stops at the first chunk that passes the cap, so at most ``limit`` plus one
chunk is ever held. A deadline bounds the whole read.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import ClientDisconnect, Request

from contexten.exceptions import BodyTimeout, MalformedPayload, PayloadTooLarge

__all__ = ["MiB", "read_body"]

MiB: Final = 1024 * 1024


def _announced_length(request: Request) -> int | None:
    header = request.headers.get("content-length")
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
    announced = _announced_length(request)
    if announced is not None and announced > limit:
        raise PayloadTooLarge(f"body of {announced} bytes announced; the limit is {limit}")
    buffer = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                if len(buffer) + len(chunk) > limit:
                    raise PayloadTooLarge(f"body passed the limit of {limit} bytes")
                buffer += chunk
    except TimeoutError:
        raise BodyTimeout(f"body not received within {timeout} s") from None
    except ClientDisconnect:
        raise MalformedPayload("client disconnected before the body ended") from None
    return bytes(buffer)
