"""Check Slack Web API calls against the method table of Slack's own SDK.

The table (``data/slack-methods.json``) lists, for every method python-slack-sdk defines,
its arguments, the required ones, its HTTP verb, and whether the SDK sends it as JSON.
Slack takes every method form-encoded (its primary encoding, or as a query string) and
JSON only for the write methods that document it; the SDK sends JSON exactly for those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SlackMethod", "SlackMethodTable"]


@dataclass(frozen=True, slots=True)
class SlackMethod:
    """One Web API method.

    Attributes:
        name: ``chat.postMessage``.
        arguments: every argument it documents.
        required: the ones it cannot do without.
        http_verb: ``GET`` or ``POST`` (Slack takes POST for every method).
        json: whether it accepts a JSON body.
    """

    name: str
    arguments: frozenset[str]
    required: frozenset[str]
    http_verb: str
    json: bool


class SlackMethodTable:
    """Slack's Web API methods, for checking calls.

    Args:
        table: ``{method: {"arguments": [...], "required": [...], "http_verb", "json"}}``.
    """

    def __init__(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        self.methods = {
            name: SlackMethod(
                name,
                frozenset(entry["arguments"]),
                frozenset(entry["required"]),
                str(entry["http_verb"]),
                bool(entry["json"]),
            )
            for name, entry in table.items()
        }

    @classmethod
    def load(cls, path: Path) -> SlackMethodTable:
        """Read the table from its JSON file."""
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def check(
        self,
        method: str,
        arguments: Mapping[str, Any],
        *,
        as_json: bool,
        strict: bool = False,
    ) -> tuple[str, list[str]] | None:
        """``None`` when the call is one Slack takes, else ``(error code, details)``.

        The error code is the one Slack answers with: ``unknown_method``,
        ``invalid_arguments`` (JSON sent to a method that takes only forms; a required
        argument missing). ``strict`` also refuses arguments the method does not document
        (Slack ignores them; a conformance test should not).
        """
        spec = self.methods.get(method)
        if spec is None:
            return "unknown_method", [f"no Slack method {method!r}"]
        problems = []
        if as_json and not spec.json:
            problems.append(f"{method} takes form-encoded arguments, not JSON")
        missing = sorted(spec.required - {k for k, v in arguments.items() if v not in (None, "")})
        if missing:
            problems.append(f"{method} needs {', '.join(missing)}")
        if strict:
            unknown = sorted(set(arguments) - spec.arguments - {"token"})
            if unknown:
                problems.append(f"{method} documents no argument {', '.join(unknown)}")
        return ("invalid_arguments", problems) if problems else None
