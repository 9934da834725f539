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
        completed: dict[str, Any] = self._complete(self.definitions[name], payload, 0)
        return completed

    def _deref(self, schema: Any) -> Any:
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _branches(self, schema: dict[str, Any]) -> list[Any]:
        return [self._deref(b) for b in schema.get("anyOf") or schema.get("oneOf") or []]

    def _complete(self, schema: Any, value: Any, depth: int) -> Any:
        schema = self._deref(schema)
        if not isinstance(schema, dict) or depth > 12:
            return value
        for part in schema.get("allOf", []):
            value = self._complete(part, value, depth + 1)
        branches = self._branches(schema)
        if branches:
            if value is None:
                return None if any(_allows_null(b) for b in branches) else self._plain(branches[0])
            fitting = [b for b in branches if _fits(b, value)]
            return self._complete(fitting[0], value, depth + 1) if fitting else value
        if isinstance(value, dict) and "properties" in schema:
            props: dict[str, Any] = schema["properties"]
            out = dict(value)
            if schema.get("additionalProperties") is False:
                out = {k: v for k, v in out.items() if k in props}
            for key in schema.get("required", []):
                if key not in out and key in props:
                    out[key] = self._plain(props[key])
            for key, sub in props.items():
                if key in out and out[key] is not None:
                    out[key] = self._complete(sub, out[key], depth + 1)
            return out
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [self._complete(schema["items"], v, depth + 1) for v in value]
        return value

    def _plain(self, schema: Any) -> Any:
        schema = self._deref(schema)
        if not isinstance(schema, dict):
            return None
        if _allows_null(schema):
            return None
        if "enum" in schema:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        branches = self._branches(schema)
        if branches:
            return None if any(_allows_null(b) for b in branches) else self._plain(branches[0])
        kind = schema.get("type")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object" or "properties" in schema:
            return self._complete(schema, {}, 0)
        plain: dict[str, Any] = {
            "string": "",
            "integer": 0,
            "number": 0,
            "boolean": False,
            "array": [],
        }
        return plain.get(str(kind))

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


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _fits(schema: Any, value: Any) -> bool:
    """Whether ``value`` has the JSON type (and const/enum) ``schema`` asks for."""
    if not isinstance(schema, dict):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    kinds = schema.get("type")
    if kinds is None:
        return "properties" not in schema or isinstance(value, dict)
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return any(isinstance(value, _JSON_TYPES.get(k, ())) for k in kinds)
