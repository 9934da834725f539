"""Reading what a request carries: query parameters and URL-encoded forms, under caps.

The pages send only URL-encoded forms (no files), so they are parsed here with the standard
library, under a size and a field-count cap, instead of with a multipart parser.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

__all__ = [
    "MAX_FORM",
    "MAX_PARAM",
    "BadRequest",
    "field",
    "int_param",
    "param",
    "read_form",
    "safe_next",
]

MAX_PARAM: Final = 200
"""Characters a query parameter or an id may have."""
MAX_FORM: Final = 256 * 1024
"""Bytes a form may have."""


class BadRequest(Exception):
    """The request is malformed; the message says why (answered 400)."""


def param(request: Request, name: str) -> str | None:
    """The query parameter ``name``, stripped (None when absent or empty).

    Raises:
        BadRequest: it is longer than :data:`MAX_PARAM`.
    """
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_PARAM:
        raise BadRequest(f"{name} is too long")
    return value or None


def int_param(request: Request, name: str, default: int | None, low: int = 1) -> int | None:
    """The query parameter ``name`` as a whole number of at least ``low`` (or ``default``).

    Raises:
        BadRequest: it is not such a number.
    """
    raw = param(request, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < low:
        raise BadRequest(f"{name} must be a whole number of at least {low}")
    return int(raw)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never another origin)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


async def read_form(request: Request, max_fields: int) -> FormData:
    """The request's URL-encoded form (the only kind the pages send), read under a cap.

    Raises:
        BadRequest: another content type, a body over :data:`MAX_FORM` bytes, or more
            than ``max_fields`` fields.
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise BadRequest("send the form URL-encoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadRequest("the form is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is malformed or has too many fields") from None
    fields: list[tuple[str, str | UploadFile]] = list(pairs)
    return FormData(fields)


def field(form: FormData, name: str) -> str | None:
    """The text field ``name`` of ``form`` (None when absent)."""
    value = form.get(name)
    return value if isinstance(value, str) else None
