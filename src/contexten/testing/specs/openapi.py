"""Check HTTP requests and responses against an OpenAPI description (3.0 or 3.1).

The operation is found from the method and the path (literal segments win over templated
ones), then the path and query parameters and the JSON body are validated with
``jsonschema`` against the operation's schemas. OpenAPI 3.0's ``nullable: true`` is read the
way 3.0 means it (the value may also be ``null``); ``$ref`` pointers resolve within the
document. Each check returns the problems found, as short sentences naming the place
(``body.state: 'merged' is not one of ['open', 'closed']``); an empty list means valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from contexten.testing.specs.completion import SchemaCompleter

__all__ = ["OpenAPIDescription", "Operation"]

JSON = dict[str, Any]

_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
_MAX_PROBLEMS: Final = 20


def _open_api_30_to_json_schema(node: Any, base: str) -> Any:
    """A copy of ``node`` where 3.0's ``nullable`` is spelled in JSON Schema and every local
    ``$ref`` names the document (``base``), so any subschema validates on its own."""
    if isinstance(node, list):
        return [_open_api_30_to_json_schema(v, base) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _open_api_30_to_json_schema(v, base) for k, v in node.items() if k != "nullable"}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = base + ref
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the description, matched to a concrete path.

    Attributes:
        method: upper-case HTTP method.
        template: the path template (``/repos/{owner}/{repo}/pulls``).
        spec: the operation object (with the path item's parameters merged in).
        path_params: the template's variables as read from the concrete path.
    """

    method: str
    template: str
    spec: JSON
    path_params: dict[str, str] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        """The description's ``operationId`` (or ``METHOD template``)."""
        return str(self.spec.get("operationId") or f"{self.method} {self.template}")


class OpenAPIDescription:
    """An OpenAPI document loaded for validation.

    Args:
        document: the parsed description.
        name: how problems name the description (``github``, ``codegen``).
    """

    def __init__(self, document: JSON, *, name: str) -> None:
        self.name = name
        self.version = str(document.get("info", {}).get("version", ""))
        self._base = f"urn:contexten:spec:{name}"
        converted = _open_api_30_to_json_schema(document, self._base)
        self._doc: JSON = converted
        resource = Resource.from_contents(converted, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(self._base, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def load(cls, path: Path, *, name: str) -> OpenAPIDescription:
        """Read a description from a JSON file."""
        return cls(json.loads(path.read_text(encoding="utf-8")), name=name)

    @cached_property
    def _templates(self) -> list[tuple[list[str], str]]:
        items = [(t.strip("/").split("/"), t) for t in self._doc.get("paths", {})]
        # Literal segments before templated ones: /issues/comments/{id} before /issues/{n}/...
        items.sort(key=lambda item: [seg.startswith("{") for seg in item[0]])
        return items

    def operations(self) -> list[Operation]:
        """Every operation in the description (path params unfilled)."""
        found = []
        for template, item in self._doc.get("paths", {}).items():
            for method in item:
                if method in _METHODS:
                    found.append(Operation(method.upper(), template, self._merged(item, method)))
        return found

    def _merged(self, item: JSON, method: str) -> JSON:
        op = dict(item[method])
        shared = [self._deref(p) for p in item.get("parameters", [])]
        own = [self._deref(p) for p in op.get("parameters", [])]
        names = {(p.get("in"), p.get("name")) for p in own}
        op["parameters"] = own + [p for p in shared if (p.get("in"), p.get("name")) not in names]
        return op

    def _deref(self, node: Any) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            pointer = node["$ref"].split("#", 1)[1]
            target: Any = self._doc
            for part in pointer.lstrip("/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def find(self, method: str, path: str) -> Operation | None:
        """The operation for ``method`` on the concrete ``path`` (no query string)."""
        segments = path.strip("/").split("/")
        for parts, template in self._templates:
            if len(parts) != len(segments):
                continue
            params: dict[str, str] = {}
            for want, got in zip(parts, segments, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                item = self._doc["paths"][template]
                if method.lower() in item:
                    return Operation(
                        method.upper(), template, self._merged(item, method.lower()), params
                    )
        return None

    def _validator(self, schema: Any) -> Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            validator = Draft202012Validator(schema, registry=self._registry)
            self._validators[key] = validator
        return validator

    def validate(self, schema: Any, value: Any, where: str) -> list[str]:
        """Problems of ``value`` against ``schema`` (a schema of this description)."""
        problems = []
        for error in self._validator(schema).iter_errors(value):
            place = ".".join([where, *(str(p) for p in error.absolute_path)])
            problems.append(f"{place}: {error.message[:200]}")
            if len(problems) >= _MAX_PROBLEMS:
                break
        return problems

    def check_request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        has_body: bool = False,
    ) -> list[str]:
        """Problems of a request: unknown operation, parameters, body.

        Args:
            method: HTTP method.
            path: the concrete path, without the base URL's prefix or a query string.
            query: the query parameters (strings, as sent).
            body: the decoded JSON body.
            has_body: whether a body was sent at all.
        """
        op = self.find(method, path)
        if op is None:
            return [f"{self.name}: no operation {method.upper()} {path}"]
        problems: list[str] = []
        query = dict(query or {})
        for param in op.spec.get("parameters", []):
            where, name = param.get("in"), str(param.get("name"))
            if where == "path":
                value: str | None = op.path_params.get(name)
            elif where == "query":
                value = query.get(name)
            else:
                continue
            if value is None:
                if param.get("required"):
                    problems.append(f"{where} parameter {name!r} is required")
                continue
            problems += self.validate(
                param.get("schema", {}), _from_text(value, param.get("schema", {})), name
            )
        problems += self._check_body(op, body, has_body)
        return problems

    def _check_body(self, op: Operation, body: Any, has_body: bool) -> list[str]:
        request_body = self._deref(op.spec.get("requestBody"))
        if not isinstance(request_body, dict):
            return [] if not has_body or body in (None, {}) else ["this operation takes no body"]
        schema = request_body.get("content", {}).get("application/json", {}).get("schema")
        if not has_body:
            return ["a JSON body is required"] if request_body.get("required") else []
        if schema is None:
            return ["this operation takes no JSON body"]
        return self.validate(schema, body, "body")

    def response_schema(self, method: str, path: str, status: int) -> Any:
        """The JSON schema of the answer to ``method path`` with ``status`` (``None``: none)."""
        op = self.find(method, path)
        if op is None:
            return None
        responses = op.spec.get("responses", {})
        answer = self._deref(responses.get(str(status)) or responses.get("default"))
        if not isinstance(answer, dict):
            return None
        return answer.get("content", {}).get("application/json", {}).get("schema")

    def complete_response(self, method: str, path: str, status: int, body: Any) -> Any:
        """``body`` completed to the response schema (required fields present); see
        :mod:`contexten.testing.specs.completion`. Unchanged when nothing is described."""
        schema = self.response_schema(method, path, status)
        if schema is None:
            return body
        return SchemaCompleter(self._deref).complete(schema, body)

    def nulled(self, schema: Any, value: Any) -> Any:
        """``value`` with every field its schema allows to be ``null`` set to ``null``: the
        leanest answer the platform may give (what a client must survive)."""
        schema = self._deref(schema)
        if not isinstance(schema, dict):
            return value
        for part in schema.get("allOf", []):
            value = self.nulled(part, value)
        branches = [
            self._deref(b)
            for b in schema.get("anyOf", []) + schema.get("oneOf", [])
            if not (isinstance(b, dict) and b.get("type") == "null")
        ]
        if len(branches) == 1:
            return self.nulled(branches[0], value)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            out = dict(value)
            for key, sub in props.items():
                if key in out:
                    out[key] = (
                        None if _allows_null(self._deref(sub)) else self.nulled(sub, out[key])
                    )
            return out
        if isinstance(value, list) and "items" in schema:
            return [self.nulled(schema["items"], v) for v in value]
        return value

    def check_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Problems of a response body against the operation's schema for ``status``."""
        op = self.find(method, path)
        if op is None:
            return [f"{self.name}: no operation {method.upper()} {path}"]
        responses = op.spec.get("responses", {})
        answer = self._deref(responses.get(str(status)) or responses.get("default"))
        if not isinstance(answer, dict):
            return [f"{op.operation_id}: status {status} is not described"]
        schema = answer.get("content", {}).get("application/json", {}).get("schema")
        return [] if schema is None else self.validate(schema, body, "response")


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(b) for b in schema.get("anyOf", []) + schema.get("oneOf", []))


def _from_text(value: str, schema: Any) -> Any:
    """A query or path parameter read the way its schema types it."""
    kinds = schema.get("type") if isinstance(schema, dict) else None
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds:
        try:
            return int(value)
        except ValueError:
            return value
    if "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    return value
