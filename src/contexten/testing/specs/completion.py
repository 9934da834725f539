"""Complete a JSON value to the shape its schema describes (for the sandbox's answers).

The sandbox builds its objects from the fields that matter and completes them here, so what
it sends has the shape the platform's description gives: a required field that is missing
gets ``null`` when the schema allows it, else its type's plain value (``""``, ``0``,
``false``, ``[]``, or a completed object), or an enum's first value; a property the schema
forbids (``additionalProperties: false``) is left out. Values already there are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["SchemaCompleter", "allows_null"]

_MAX_DEPTH: Final = 12
_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_PLAIN: Final[dict[str, Any]] = {
    "string": "",
    "integer": 0,
    "number": 0,
    "boolean": False,
}


def allows_null(schema: Any) -> bool:
    """Whether ``schema`` (already dereferenced) accepts ``null`` at its top."""
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def _fits(schema: Any, value: Any) -> bool:
    """Whether ``value`` has the JSON type (and enum or const) ``schema`` asks for."""
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


class SchemaCompleter:
    """Completes values against schemas of one document.

    Args:
        deref: resolves a ``{"$ref": ...}`` schema to its target (others unchanged).
    """

    def __init__(self, deref: Callable[[Any], Any]) -> None:
        self._deref = deref

    def complete(self, schema: Any, value: Any) -> Any:
        """``value`` completed to ``schema`` (see the module docstring)."""
        return self._complete(schema, value, 0)

    def _branches(self, schema: dict[str, Any]) -> list[Any]:
        return [self._deref(b) for b in schema.get("anyOf") or schema.get("oneOf") or []]

    def _complete(self, schema: Any, value: Any, depth: int) -> Any:
        schema = self._deref(schema)
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return value
        for part in schema.get("allOf", []):
            value = self._complete(part, value, depth + 1)
        branches = self._branches(schema)
        if branches:
            if value is None:
                return None if any(allows_null(b) for b in branches) else self._plain(branches[0])
            fitting = [b for b in branches if _fits(b, value)]
            return self._complete(fitting[0], value, depth + 1) if fitting else value
        if isinstance(value, dict) and "properties" in schema:
            props: dict[str, Any] = schema["properties"]
            out = dict(value)
            if schema.get("additionalProperties") is False:
                out = {k: v for k, v in out.items() if k in props}
            for key in schema.get("required", []):
                if key not in out and key in props:
                    out[key] = self._plain(props[key], depth + 1)
            for key, sub in props.items():
                if key in out and out[key] is not None:
                    out[key] = self._complete(sub, out[key], depth + 1)
            return out
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [self._complete(schema["items"], v, depth + 1) for v in value]
        return value

    def _plain(self, schema: Any, depth: int = 0) -> Any:
        schema = self._deref(schema)
        if not isinstance(schema, dict) or allows_null(schema):
            return None
        if "enum" in schema:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        branches = self._branches(schema)
        if branches:
            if any(allows_null(b) for b in branches):
                return None
            return self._plain(branches[0], depth + 1)
        kind = schema.get("type")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object" or "properties" in schema:
            return self._complete(schema, {}, depth + 1)
        if kind == "array":
            return []
        return _PLAIN.get(str(kind))
