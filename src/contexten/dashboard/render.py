"""Rendering: the Jinja2 environment (autoescaping everything), its filters, and the
security headers every dashboard answer carries.

Payloads are hostile input: a pull request titled ``<script>`` must show as text. So the
environment autoescapes every template whatever its name, no template uses ``|safe``, and
values are only ever put into text and attribute positions. Links to platform objects are
only made from ``http(s)`` URLs (:func:`safe_url`): a ``javascript:`` URL in a payload stays
text. The Content-Security-Policy allows scripts and styles from this origin only (no
``'unsafe-inline'``), so even markup that slipped through could not run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import jinja2
from rich.text import Text
from starlette.responses import HTMLResponse, Response

from contexten.cli._timeline import describe
from contexten.observability.redaction import redact_secrets
from contexten.store.base import RecordedEvent

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "TEMPLATES_DIR",
    "Renderer",
    "event_link",
    "history_rows",
    "pretty_json",
    "safe_url",
    "summary",
]

TEMPLATES_DIR: Final = Path(__file__).parent / "templates"

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_MAX_PRETTY: Final = 200_000
"""Characters of pretty-printed payload shown at most (the rest is cut, and says so)."""
_LINK_KEYS: Final = ("html_url", "url", "permalink", "web_url")


def pretty_json(value: Any) -> str:
    """``value`` with its secrets redacted, as indented JSON text (escaped when rendered)."""
    text = json.dumps(redact_secrets(value), indent=2, ensure_ascii=False, default=str)
    if len(text) > _MAX_PRETTY:
        return text[:_MAX_PRETTY] + f"\n… ({len(text) - _MAX_PRETTY} more characters)"
    return text


def safe_url(value: Any) -> str | None:
    """``value`` if it is an absolute ``http(s)`` URL, else None (never a script URL)."""
    if not isinstance(value, str) or len(value) > 2000:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return value.strip()


def event_link(rec: RecordedEvent) -> str | None:
    """A link to the platform object an event is about (a PR, an issue...), if it has one."""
    data = rec.event.data
    candidates: list[Any] = [data.get(k) for k in _LINK_KEYS]
    for value in data.values():
        if isinstance(value, dict):
            candidates.extend(value.get(k) for k in _LINK_KEYS)
    for candidate in candidates:
        url = safe_url(candidate)
        if url is not None:
            return url
    return None


def summary(rec: RecordedEvent) -> str:
    """One plain-text line saying what an event is (the CLI timeline's words).

    The CLI's line is Rich markup; a line without ``[`` (tags, escapes) or ``:`` (emoji
    codes) has none and is its own plain text, so it skips the markup parser, which is
    most of this function's time on a work item's 200-entry page.
    """
    line = describe(rec)
    if line is None:
        subject = f" {rec.event.subject}" if rec.event.subject else ""
        return f"{rec.event.type}{subject}"
    text = line[2]
    if "[" not in text and ":" not in text:
        return text
    return Text.from_markup(text).plain


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if not isinstance(value, datetime):
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _query(params: Mapping[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else ""


class Renderer:
    """Renders the dashboard's templates into answers with the security headers."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            pretty=pretty_json,
            when=_when,
            short=_short,
            safe_url=safe_url,
            summary=summary,
            event_link=event_link,
        )
        self.env.globals.update(query=_query)

    def html(self, template: str, context: Mapping[str, Any], status: int = 200) -> Response:
        """A full or partial page."""
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status, headers=dict(SECURITY_HEADERS))

    def fragment(self, template: str, context: Mapping[str, Any]) -> str:
        """A template's text (for the live stream)."""
        return self.env.get_template(template).render(**context)


def history_rows(history: list[Any]) -> list[dict[str, Any]]:
    """The history entries with what a person wants beside each: how long since the
    previous entry, the attempts, the error, a deadline."""
    rows = []
    previous: datetime | None = None
    for h in history:
        data = dict(h.data)
        took = (h.recorded_at - previous).total_seconds() if previous is not None else None
        previous = h.recorded_at
        error = data.get("error") if isinstance(data.get("error"), dict) else None
        rows.append(
            {
                "entry": h,
                "kind": h.kind,
                "name": data.get("name") or data.get("to") or data.get("pattern") or "",
                "attempts": data.get("attempts"),
                "took": took,
                "error": error,
                "deadline": data.get("fire_at") or data.get("deadline"),
                "compensation": h.kind.startswith("compensation"),
                "data": data,
            }
        )
    return rows
