"""What may be shown: secrets blanked out, control characters made visible.

Everything Contexten prints or serves that could hold a credential or a value from a payload
goes through this module, so the rules live in one place:

- :func:`redact_url` blanks a URL's credentials: the userinfo password
  (``postgresql://app:***@db/contexten``) and credential query parameters (``?password=``,
  ``passfile``, ``sslpassword``, ``sslkey``, ``token``...). Store URLs in logs, ``/readyz``,
  health reports, errors and the CLI go through it.
- :func:`redact_text` does the same for URLs and ``name=value`` credentials quoted inside free
  text (an error message, a log line), including libpq's ``password=... host=...`` form, and
  blanks the secret of Slack's capability URLs (incoming webhooks, ``response_url``).
- :func:`is_sensitive_field` says whether a log field's *name* marks a payload (``data``) or a
  credential (``api_token``): such fields are never logged, whatever their value.
- :func:`redact_secrets` walks a payload about to be shown to a person (a dashboard page):
  fields named like credentials are blanked, and strings go through :func:`redact_text`.
- :func:`escape_control` makes control characters visible (``\\n``, ``\\x1b``...), so a value
  from a payload (a subject, an id, an exception message quoting a body) cannot start a forged
  log line, move the cursor, retitle or clear a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit

__all__ = [
    "MAX_REDACT_DEPTH",
    "REDACTED",
    "URL_REDACTED",
    "escape_control",
    "is_secret_field",
    "is_sensitive_field",
    "is_sensitive_parameter",
    "redact_secrets",
    "redact_text",
    "redact_url",
]

REDACTED: Final = "[redacted]"
"""What a log field named like a payload or a credential is replaced with."""

URL_REDACTED: Final = "***"
"""What a password or credential parameter inside a URL (or text) is replaced with."""

# Field names that carry payloads: never logged, whatever their value.
_PAYLOAD_FIELDS: Final = frozenset({"data", "payload", "body", "headers", "raw_body"})
# Substrings of field names that carry credentials.
_SECRET_FIELD_PARTS: Final = (
    "secret",
    "token",
    "password",
    "passwd",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
    "signature",
    "private_key",
)
# Substrings of URL query parameter / key=value names that carry credentials (or point at
# them: libpq's passfile, sslkey): password, sslpassword, passfile, sslkey, access_token...
_SECRET_PARAMETER_RE: Final = re.compile(
    r"pass|secret|token|sslkey|sslcert|(?:api|private|access|secret)_?key|auth(?!or)"
    r"|signature|^sig$|credential|cookie",
    re.IGNORECASE,
)
# ``scheme://user:password@`` anywhere in a text; the password runs to the last ``@`` before
# the path (an unencoded ``@`` in a password is accepted by most parsers, so cover it).
_USERINFO_RE: Final = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/?#@]*):(?P<password>[^\s/?#]*)@"
)
# ``name=value`` where the name marks a credential: URL query parameters (``?password=x&``)
# and libpq key/value connection strings (``password='x y' host=db``).
_PARAMETER_RE: Final = re.compile(
    r"(?P<name>[A-Za-z_][\w.\-]*)=(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^&\s'\";,)]*)"
)
# Slack's capability URLs, whose last path segment is the credential: incoming webhooks
# (``hooks.slack.com/services/T…/B…/<secret>``), the ``response_url`` of interactions and
# slash commands (``/actions/…``, ``/commands/…``), workflow and trigger webhooks. Anyone
# holding one can post to the channel.
_SLACK_HOOK_RE: Final = re.compile(
    r"(?P<head>\bhttps?://hooks\.slack(?:-gov)?\.com/"
    r"(?:services|actions|commands|workflows|triggers)/(?:[^/\s\"'?#<>]+/){1,3})"
    r"[^/\s\"'?#<>]+"
)
# C0 controls, DEL, C1 controls (CSI 0x9b is ESC[ to many terminals), the Unicode line and
# paragraph separators, and the bidirectional overrides and isolates (which reorder what a
# terminal shows: "Trojan Source").
_CONTROL_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_sensitive_field(name: str) -> bool:
    """Whether a log field named ``name`` may carry a payload or a credential."""
    lowered = name.lower()
    return lowered in _PAYLOAD_FIELDS or any(part in lowered for part in _SECRET_FIELD_PARTS)


def is_secret_field(name: str) -> bool:
    """Whether a field named ``name`` holds a credential (``api_token``, ``Password``...)."""
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_FIELD_PARTS)


MAX_REDACT_DEPTH: Final = 64
"""Containers nested deeper are replaced whole by :func:`redact_secrets`."""


def redact_secrets(value: Any, *, _depth: int = 0) -> Any:
    """A copy of a JSON-like ``value`` fit to show a person: every mapping entry named like a
    credential blanked (:data:`REDACTED`), every string through :func:`redact_text`.

    Lists and mappings are walked to :data:`MAX_REDACT_DEPTH`; the input is not modified.
    """
    if _depth > MAX_REDACT_DEPTH:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str) and is_secret_field(k) and v not in (None, "")
            else redact_secrets(v, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(v, _depth=_depth + 1) for v in value]
    return value


def is_sensitive_parameter(name: str) -> bool:
    """Whether a URL query parameter (or ``name=value`` setting) named ``name`` is a credential.

    Covers libpq's ``password``, ``passfile``, ``sslpassword``, ``sslkey`` and the usual
    ``token``, ``secret``, ``api_key``, ``auth``, ``signature`` names.
    """
    return _SECRET_PARAMETER_RE.search(unquote(name)) is not None


def _redact_parameter(match: re.Match[str]) -> str:
    name = match["name"]
    if not match["value"] or not is_sensitive_parameter(name):
        return match[0]
    return f"{name}={URL_REDACTED}"


def _redact_query(query: str) -> str:
    return "&".join(
        _PARAMETER_RE.sub(_redact_parameter, pair, count=1) for pair in query.split("&")
    )


def redact_url(url: str) -> str:
    """``url`` without its credentials, otherwise unchanged.

    The userinfo password becomes ``***`` (``postgresql://app:***@db:5432/contexten``) and so
    does the value of every credential query parameter
    (``postgresql://db/contexten?password=***&sslmode=require``). A URL that does not parse
    is treated as text (:func:`redact_text`).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{URL_REDACTED}@{host}"
    redacted = url
    if netloc != parts.netloc:
        redacted = redacted.replace(f"//{parts.netloc}", f"//{netloc}", 1)
    query = _redact_query(parts.query) if parts.query else parts.query
    if query != parts.query:
        # Splice rather than urlunsplit, which drops an empty authority (postgresql:///db).
        head, _, rest = redacted.partition("?")
        fragment = rest.partition("#")[1:]
        redacted = f"{head}?{query}{''.join(fragment)}"
    return redacted


def redact_text(text: str) -> str:
    """``text`` with the credentials of any URL or ``name=value`` setting in it blanked.

    For free text that may quote a connection string: an error message, a log line, a
    command's output. Cheap when there is nothing to redact.
    """
    if "hooks.slack" in text:
        text = _SLACK_HOOK_RE.sub(rf"\g<head>{URL_REDACTED}", text)
    if "=" not in text and "@" not in text:
        return text
    if "@" in text:
        text = _USERINFO_RE.sub(rf"\g<head>:{URL_REDACTED}@", text)
    if "=" in text:
        text = _PARAMETER_RE.sub(_redact_parameter, text)
    return text


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written out (``\\n``, ``\\x1b``, ``\\u202e``).

    Keeps a value on one line and inert on a terminal: no newline or carriage return to forge
    a log record, no escape sequence to move the cursor, clear the screen or set the window
    title, no bidirectional override to reorder what is shown.
    """
    return _CONTROL_RE.sub(_escape, text) if _CONTROL_RE.search(text) else text
