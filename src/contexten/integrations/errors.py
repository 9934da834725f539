"""The one place where httpx's exceptions become Contexten's platform errors.

Every concrete httpx exception class is named in :data:`HTTPX_ERROR_MAP` with the error it
becomes and whether the request may already have taken effect on the platform; a test checks
the table covers every exception httpx exports, so an httpx upgrade that adds one fails loudly
instead of leaking a foreign exception through a client.

Responses (as opposed to transport failures) are judged by each platform's adapter, because
"the request failed" looks different on each platform (Slack answers 200 with ``ok: false``,
Linear 200 or 400 with GraphQL ``errors``); :func:`error_for_status` is the shared HTTP part.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from contexten.exceptions import (
    PlatformError,
    PlatformNotFound,
    PlatformRequestError,
    PlatformUnavailable,
    RateLimited,
)

__all__ = ["HTTPX_ERROR_MAP", "Translation", "error_for_status", "translate_httpx_error"]


@dataclass(frozen=True, slots=True)
class Translation:
    """How one httpx exception class is translated.

    Attributes:
        error: the Contexten exception class to raise.
        maybe_applied: whether the request may have reached the platform (so a blind retry of
            a create could duplicate it).
    """

    error: type[PlatformError]
    maybe_applied: bool


_UNAVAILABLE_BEFORE_SEND = Translation(PlatformUnavailable, maybe_applied=False)
_UNAVAILABLE_AFTER_SEND = Translation(PlatformUnavailable, maybe_applied=True)
_OUR_BUG = Translation(PlatformRequestError, maybe_applied=False)

HTTPX_ERROR_MAP: dict[type[Exception], Translation] = {
    # Nothing reached the platform: always safe to retry.
    httpx.ConnectError: _UNAVAILABLE_BEFORE_SEND,
    httpx.ConnectTimeout: _UNAVAILABLE_BEFORE_SEND,
    httpx.PoolTimeout: _UNAVAILABLE_BEFORE_SEND,
    httpx.ProxyError: _UNAVAILABLE_BEFORE_SEND,
    # The request was (perhaps partly) sent: the platform may have acted on it.
    httpx.ReadError: _UNAVAILABLE_AFTER_SEND,
    httpx.ReadTimeout: _UNAVAILABLE_AFTER_SEND,
    httpx.WriteError: _UNAVAILABLE_AFTER_SEND,
    httpx.WriteTimeout: _UNAVAILABLE_AFTER_SEND,
    httpx.CloseError: _UNAVAILABLE_AFTER_SEND,
    httpx.RemoteProtocolError: _UNAVAILABLE_AFTER_SEND,
    httpx.DecodingError: _UNAVAILABLE_AFTER_SEND,
    # Bases, for subclasses a future httpx might add (the table test still flags them).
    httpx.TimeoutException: _UNAVAILABLE_AFTER_SEND,
    httpx.NetworkError: _UNAVAILABLE_AFTER_SEND,
    httpx.ProtocolError: _UNAVAILABLE_AFTER_SEND,
    httpx.TransportError: _UNAVAILABLE_AFTER_SEND,
    httpx.RequestError: _UNAVAILABLE_AFTER_SEND,
    # Our side built a request that cannot be sent: retrying cannot help.
    httpx.LocalProtocolError: _OUR_BUG,
    httpx.UnsupportedProtocol: _OUR_BUG,
    httpx.InvalidURL: _OUR_BUG,
    httpx.TooManyRedirects: _OUR_BUG,
    httpx.CookieConflict: _OUR_BUG,
    httpx.StreamError: _OUR_BUG,
    httpx.StreamConsumed: _OUR_BUG,
    httpx.StreamClosed: _OUR_BUG,
    httpx.ResponseNotRead: _OUR_BUG,
    httpx.RequestNotRead: _OUR_BUG,
    # Only raised by raise_for_status(), which the clients do not call; mapped by status.
    httpx.HTTPStatusError: _UNAVAILABLE_AFTER_SEND,
    httpx.HTTPError: _UNAVAILABLE_AFTER_SEND,
}


def translate_httpx_error(error: Exception, *, platform: str) -> PlatformError:
    """The platform error an httpx exception becomes (``raise ... from error`` it)."""
    if isinstance(error, httpx.HTTPStatusError):
        return error_for_status(error.response.status_code, str(error), platform=platform)
    translation = _lookup(type(error))
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    result = translation.error(message, platform=platform)
    result.maybe_applied = translation.maybe_applied
    return result


def _lookup(cls: type[Exception]) -> Translation:
    for base in cls.__mro__:
        if base in HTTPX_ERROR_MAP:
            return HTTPX_ERROR_MAP[base]
    return _UNAVAILABLE_AFTER_SEND


def error_for_status(
    status: int,
    message: str,
    *,
    platform: str,
    code: str | None = None,
    retry_after: float | None = None,
) -> PlatformError:
    """The platform error an HTTP error status becomes.

    429 (and any status with a ``retry_after``) is :class:`RateLimited`; 5xx and 408 are
    transient (:class:`PlatformUnavailable`, possibly applied); 404 and 410 are
    :class:`PlatformNotFound`; any other 4xx is :class:`PlatformRequestError`.
    """
    error: PlatformError
    if status == 429 or retry_after is not None:
        error = RateLimited(
            message,
            retry_after=retry_after if retry_after is not None else 1.0,
            platform=platform,
            status=status,
            code=code,
        )
    elif status >= 500 or status == 408:
        error = PlatformUnavailable(message, platform=platform, status=status, code=code)
        error.maybe_applied = status not in (502, 503, 504)
    elif status in (404, 410):
        error = PlatformNotFound(message, platform=platform, status=status, code=code)
    else:
        error = PlatformRequestError(message, platform=platform, status=status, code=code)
    return error
