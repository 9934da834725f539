"""Redact credentials from a JSON-like value before a person sees it (a page, an answer).

Logs never carry payloads at all (:mod:`contexten.observability.logging` blanks them); pages
that must show a payload show it with every field named like a credential replaced by
:data:`~contexten.observability.logging.REDACTED`, using the same list of name parts as the
logs (``secret``, ``token``, ``password``...), so there is one definition of "a secret".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from contexten.observability.logging import _SECRET_PARTS, REDACTED

__all__ = ["MAX_REDACT_DEPTH", "is_secret_name", "redact_secrets"]

MAX_REDACT_DEPTH: Final = 64
"""Deeper containers are replaced whole (stored events never nest deeper than this)."""


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a credential (``api_token``, ``Password``...)."""
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_PARTS)


def redact_secrets(value: Any, *, _depth: int = 0) -> Any:
    """A copy of ``value`` with every mapping entry named like a credential redacted.

    Lists and mappings are walked (to :data:`MAX_REDACT_DEPTH`); other values are returned
    as they are. The input is never modified.
    """
    if _depth > MAX_REDACT_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str) and is_secret_name(k) and v not in (None, "")
            else redact_secrets(v, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(v, _depth=_depth + 1) for v in value]
    return value
