"""The OpenAPI 3.1 description of the ingress's HTTP API, served at ``/openapi.json``.

Written by hand (it is small, and a generator would need docstring YAML): a test checks that
every route the app serves is described here and that the answers match their schemas.

Operations that need a token declare the ``bearerAuth`` scheme and their 401/403/429
answers; the webhooks (signed instead), ``/healthz`` and ``/readyz`` declare none
(``/readyz?verbose=1`` takes a token optionally).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from contexten.ingress.api import MAX_LIMIT
from contexten.ingress.openapi_events import events_paths

__all__ = ["openapi_spec", "protected_operation"]

_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_SEGMENT: Final = r"(?:\*|[a-z0-9_][a-z0-9_\-]*)"
_TYPE_PATTERN: Final = rf"^(?:{_SEGMENT}(?:\.{_SEGMENT})*(?:\.(?:\*\*|>))?|\*\*|>)$"
"""What :func:`~contexten.events.patterns.compile_pattern` accepts, as a JSON Schema regex."""


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _webhook(platform: str, summary: str, headers: list[tuple[str, bool]], form: bool) -> Any:
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if form:
        content["application/x-www-form-urlencoded"] = {"schema": {"type": "object"}}
    return {
        "post": {
            "operationId": f"{platform}Webhook",
            "summary": summary,
            "tags": ["webhooks"],
            "security": [],
            "parameters": [
                {"name": name, "in": "header", "required": required, "schema": {"type": "string"}}
                for name, required in headers
            ],
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": _json_response(
                    "A duplicate (nothing changed), or Slack's url_verification challenge.",
                    {"type": "object"},
                ),
                "202": _json_response(
                    "Verified and durably stored.", {"$ref": "#/components/schemas/Accepted"}
                ),
                "400": _json_response("Malformed body (JSON, depth, numbers, fields).", _ERROR),
                "401": {"description": "Missing, wrong or stale signature (no detail)."},
                "408": _json_response("The body did not arrive in time.", _ERROR),
                "413": _json_response("The body is over the platform's size cap.", _ERROR),
                "429": _json_response(
                    "Load shed: too many requests wait on the store; retry after Retry-After.",
                    _ERROR,
                ),
                "503": _json_response("The store is unreachable; nothing was stored.", _ERROR),
            },
        }
    }


_BEARER_SCHEME: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API token: `contexten tokens create --role viewer --name NAME`, or "
    "CONTEXTEN_ADMIN_TOKEN. Roles: viewer (read), operator (also act), admin (also tokens).",
}


def _auth_responses(role: str) -> dict[str, Any]:
    return {
        "400": _json_response("Bad parameters, or a Host this server does not answer to.", _ERROR),
        "401": _json_response("No bearer token, or not an active one.", _ERROR),
        "403": _json_response(f"The token's role is below {role}.", _ERROR),
        "429": _json_response(
            "Too many failed authentications from this client; retry after Retry-After.",
            _ERROR,
        ),
    }


def _protected(operation: dict[str, Any], role: str = "viewer") -> dict[str, Any]:
    """``operation`` with the bearer scheme and the answers of the authentication layer."""
    responses = {**_auth_responses(role), **operation["responses"]}
    return {**operation, "security": [{"bearerAuth": []}], "responses": responses}


protected_operation = _protected
"""Public name of :func:`_protected`, for routes described outside this module."""


def _int_query(name: str, description: str, minimum: int, default: int | None = None) -> Any:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": 2**63 - 1}
    if name == "limit":
        schema["maximum"] = MAX_LIMIT
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "Ready": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "details": {"type": "object", "description": "With verbose=1 only."},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["status", "id", "position"],
        "properties": {
            "status": {"const": "accepted"},
            "id": {"type": "string"},
            "position": {"type": "integer"},
        },
    },
    "Event": {
        "type": "object",
        "description": "The event envelope (CloudEvents 1.0 attributes plus extensions). "
        "Attributes at their default are left out: no source means contexten.",
        "required": ["type", "id", "time"],
        "properties": {
            "type": {"type": "string", "examples": ["github.pull_request.opened"]},
            "source": {"type": "string", "default": "contexten"},
            "id": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string"},
            "data": {"type": "object"},
            "correlation_id": {"type": "string"},
            "causation_id": {"type": "string"},
            "delivery_id": {"type": "string"},
            "actor": {"type": "string"},
            "traceparent": {"type": "string"},
        },
    },
    "RecordedEvent": {
        "type": "object",
        "required": ["position", "stream", "version", "recorded_at", "event"],
        "properties": {
            "position": {"type": "integer", "minimum": 1},
            "stream": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "recorded_at": {"type": "string", "format": "date-time"},
            "event": {"$ref": "#/components/schemas/Event"},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["events", "next"],
        "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/RecordedEvent"}},
            "next": {"type": ["string", "null"], "description": "URL of the next page."},
            "head": {"type": "integer", "description": "The log's head when read."},
        },
    },
}


def openapi_spec(extra_paths: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call), with ``extra_paths`` (routes served
    beside these, e.g. the read-model API) added."""
    spec = _base_spec()
    spec["paths"].update(copy.deepcopy(dict(extra_paths or {})))
    return spec


def _base_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Contexten",
            "version": "1",
            "description": "Webhook ingress, health and the event-log API of a Contexten app.",
        },
        "paths": {
            "/webhooks/github": _webhook(
                "github",
                "Receive a GitHub webhook delivery (X-Hub-Signature-256, 25 MB cap).",
                [
                    ("X-Hub-Signature-256", True),
                    ("X-GitHub-Event", True),
                    ("X-GitHub-Delivery", True),
                ],
                form=False,
            ),
            "/webhooks/linear": _webhook(
                "linear",
                "Receive a Linear webhook (Linear-Signature, webhookTimestamp, 1 MB cap).",
                [("Linear-Signature", True), ("Linear-Delivery", False), ("Linear-Event", False)],
                form=False,
            ),
            "/webhooks/slack": _webhook(
                "slack",
                "Receive a Slack Events API, interactivity or slash-command request (1 MB cap).",
                [
                    ("X-Slack-Signature", True),
                    ("X-Slack-Request-Timestamp", True),
                    ("X-Slack-Retry-Num", False),
                ],
                form=True,
            ),
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive.",
                    "tags": ["operations"],
                    "security": [],
                    "responses": {"200": _json_response("Alive.", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Ready: the store is reachable (and the dispatcher runs). "
                    "Status only; verbose=1 (viewer) adds the details.",
                    "tags": ["operations"],
                    "security": [{}, {"bearerAuth": []}],
                    "parameters": [
                        {
                            "name": "verbose",
                            "in": "query",
                            "required": False,
                            "description": "1: add the details (needs a viewer token).",
                            "schema": {"type": "string", "enum": ["0", "1"]},
                        }
                    ],
                    "responses": {
                        **_auth_responses("viewer"),
                        "200": _json_response("Ready.", {"$ref": "#/components/schemas/Ready"}),
                        "503": _json_response(
                            "Not ready (with verbose=1, the details say why).",
                            {"$ref": "#/components/schemas/Ready"},
                        ),
                    },
                }
            },
            "/metrics": {
                "get": _protected(
                    {
                        "operationId": "metrics",
                        "summary": "Prometheus metrics (text exposition format).",
                        "tags": ["operations"],
                        "responses": {
                            "200": {
                                "description": "The metrics.",
                                "content": {"text/plain": {"schema": {"type": "string"}}},
                            }
                        },
                    }
                )
            },
            "/openapi.json": {
                "get": _protected(
                    {
                        "operationId": "openapi",
                        "summary": "This description.",
                        "tags": ["operations"],
                        "responses": {
                            "200": _json_response("The OpenAPI document.", {"type": "object"})
                        },
                    }
                )
            },
            **events_paths(_protected, _TYPE_PATTERN),
        },
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"bearerAuth": dict(_BEARER_SCHEME)},
        },
    }
