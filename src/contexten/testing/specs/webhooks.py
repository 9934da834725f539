"""Check webhook payloads against JSON Schema definitions (GitHub's, as Octokit publishes them).

The schema document (``data/github-webhooks.json``) has one definition per event and action
(``pull_request$opened``, ``push$event``); a delivery of ``X-GitHub-Event: pull_request`` with
``"action": "opened"`` must validate against ``pull_request$opened``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from contexten.testing.specs.completion import SchemaCompleter

__all__ = ["WebhookSchemas"]

_BASE = "urn:contexten:spec:github-webhooks"


class WebhookSchemas:
    """GitHub's webhook payload schemas.

    Args:
        document: the JSON Schema document with its ``definitions``.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.definitions: dict[str, Any] = document["definitions"]
        resource = Resource.from_contents(document, default_specification=DRAFT7)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self._validators: dict[str, Draft7Validator] = {}
        self._completer = SchemaCompleter(self._deref)

    def _deref(self, schema: Any) -> Any:
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    @classmethod
    def load(cls, path: Path) -> WebhookSchemas:
        """Read the schemas from their JSON file."""
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def definition(self, event: str, payload: Any) -> str | None:
        """The definition a delivery of ``event`` with this payload must match, if described."""
        action = payload.get("action") if isinstance(payload, dict) else None
        for name in (f"{event}${action}", f"{event}$event"):
            if name in self.definitions:
                return name
        return None

    def complete(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` with what its schema requires and it lacks filled in, and what the schema
        forbids (``additionalProperties: false``) left out.

        The sandbox builds its payloads from the fields that matter and completes them here,
        so they have the shape GitHub's have: a nullable field that is missing is ``null``;
        a required one gets its type's plain value (``""``, ``0``, ``false``, ``[]``, or a
        completed object); an enum its first value. Values already there are kept as they are.
        """
        name = self.definition(event, payload)
        if name is None:
            return payload
        completed: dict[str, Any] = self._completer.complete(self.definitions[name], payload)
        return completed

    def check(self, event: str, payload: Any) -> list[str]:
        """Problems of ``payload`` as a delivery of ``event``; undescribed events are problems."""
        name = self.definition(event, payload)
        if name is None:
            action = payload.get("action") if isinstance(payload, dict) else None
            return [f"github: no webhook schema for {event} {action or ''}".strip()]
        validator = self._validators.get(name)
        if validator is None:
            ref = {"$ref": f"{_BASE}#/definitions/{name.replace('~', '~0').replace('/', '~1')}"}
            validator = Draft7Validator(ref, registry=self._registry)
            self._validators[name] = validator
        problems = []
        for error in validator.iter_errors(payload):
            place = ".".join(["payload", *(str(p) for p in error.absolute_path)])
            problems.append(f"{place}: {error.message[:200]}")
            if len(problems) >= 20:
                break
        return problems
