"""The OpenAPI description of the events API (:mod:`contexten.ingress.api`,
:mod:`contexten.ingress.publish`): merged into ``/openapi.json`` by
:mod:`contexten.ingress.openapi`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from contexten.ingress.api import DEFAULT_LIMIT, MAX_LIMIT
from contexten.ingress.publish import STRUCTURED

__all__ = ["events_paths"]

_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_MAX_POSITION: Final = 2**63 - 1


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _q(name: str, description: str, schema: dict[str, Any], where: str = "query") -> Any:
    return {
        "name": name,
        "in": where,
        "required": False,
        "description": description,
        "schema": schema,
    }


def _position(name: str, description: str, minimum: int = 0) -> Any:
    return _q(name, description, {"type": "integer", "minimum": minimum, "maximum": _MAX_POSITION})


_LIMIT: Final = _q(
    "limit",
    "Events per page.",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
_TIME: Final = {"type": "string", "format": "date-time"}
_TEXT: Final = {"type": "string", "maxLength": 300}
_AS_OF: Final = _q("as_of", "The log as it was at this time (ISO 8601 with offset).", _TIME)
_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The event id.",
    "schema": {"type": "string"},
}


def _filters(type_pattern: str, *, times: bool = True) -> list[dict[str, Any]]:
    found = [
        _q(
            "type",
            "Type pattern ('*': a segment, '**': the rest).",
            {"type": "string", "pattern": type_pattern, "examples": ["github.pull_request.*"]},
        ),
        _q("source", "Only events from this source.", _TEXT),
        _q("subject", "Only events about this subject.", _TEXT),
        _q("correlation_id", "Only events of this work item.", _TEXT),
        _q("causation_id", "Only events caused by the event with this id.", _TEXT),
    ]
    if times:
        found += [
            _q("since", "Recorded at or after (ISO 8601 with offset).", _TIME),
            _q("until", "Recorded before (ISO 8601 with offset).", _TIME),
            _AS_OF,
        ]
    return found


_ATTR: Final = {
    "type": "string",
    "maxLength": 1024,
    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
}
_SCALAR: Final = [
    {"type": "string"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
]
_CLOUDEVENT: Final = {
    "type": "object",
    "description": "A CloudEvents 1.0 event in structured mode. Every attribute is a string "
    "without control characters (at most 1,024 characters); type is dot-separated lower-case "
    "segments; data is a JSON object (integers within 64 bits, nesting within 64 levels; "
    "the schema shows two levels).",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {**_ATTR, "minLength": 1},
        "source": {**_ATTR, "minLength": 1},
        "type": {
            "type": "string",
            "maxLength": 200,
            "pattern": r"^[a-z0-9_][a-z0-9_\-]*(\.[a-z0-9_][a-z0-9_\-]*)*$",
            "examples": ["com.example.invoice.paid"],
        },
        "subject": _ATTR,
        "time": {
            "type": "string",
            "description": "RFC 3339 with an offset.",
            "pattern": r"^[1-8][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
            r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
            r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$",
        },
        "datacontenttype": {"const": "application/json"},
        "data": {
            "type": "object",
            "additionalProperties": {
                "anyOf": [
                    *_SCALAR,
                    {"type": "array", "items": {"anyOf": _SCALAR}},
                    {"type": "object", "additionalProperties": {"anyOf": _SCALAR}},
                ]
            },
        },
        "correlationid": _ATTR,
        "causationid": _ATTR,
        "deliveryid": _ATTR,
        "actor": _ATTR,
        "traceparent": _ATTR,
    },
    "additionalProperties": False,
}

_SSE_MESSAGE: Final = {
    "type": "object",
    "description": "One server-sent message: id is the log position; data, when present, "
    "is a RecordedEvent as JSON (messages without data are keep-alives).",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

_STORED: Final = {
    "type": "object",
    "required": ["status", "id", "position", "stream"],
    "properties": {
        "status": {"enum": ["stored", "duplicate"]},
        "id": {"type": "string"},
        "position": {"type": "integer", "minimum": 1},
        "stream": {"type": "string"},
    },
}


def events_paths(protected: Callable[..., dict[str, Any]], type_pattern: str) -> dict[str, Any]:
    """The ``/api/v1/events`` paths; ``protected(operation, role)`` adds the bearer scheme."""
    return {
        "/api/v1/events": {
            "get": protected(
                {
                    "operationId": "listEvents",
                    "summary": "Page through the event log, filtered: newest first, or "
                    "oldest first after a position.",
                    "tags": ["events"],
                    "parameters": [
                        *_filters(type_pattern),
                        _position("before", "Only events below this position (not with after).", 1),
                        _position("after", "Only events above this position, oldest first."),
                        _LIMIT,
                    ],
                    "responses": {
                        "200": _json("One page.", {"$ref": "#/components/schemas/EventPage"}),
                        "400": _json("Bad parameters.", _ERROR),
                        "503": _json("The store is unreachable.", _ERROR),
                    },
                }
            ),
            "post": protected(
                {
                    "operationId": "publishEvent",
                    "summary": "Publish a CloudEvent (structured or binary HTTP mode), stored "
                    "once per (source, id) before the answer (operator; audited).",
                    "tags": ["events"],
                    "description": "Binary mode is accepted too: the attributes as ce-* headers "
                    "(ce-specversion, ce-id, ce-source, ce-type, ce-subject, ce-time, "
                    "ce-correlationid...) and the data as an application/json body.",
                    "parameters": [],
                    "requestBody": {
                        "required": True,
                        "content": {STRUCTURED: {"schema": _CLOUDEVENT}},
                    },
                    "responses": {
                        "200": _json("A duplicate of an event published before.", _STORED),
                        "201": _json("Stored.", _STORED),
                        "400": _json("A missing or bad attribute, or bad JSON data.", _ERROR),
                        "408": _json("The body did not arrive in time.", _ERROR),
                        "409": _json("The id is taken by an event of another source.", _ERROR),
                        "413": _json("The body is over the size limit.", _ERROR),
                        "415": _json("Not a CloudEvent (structured or binary mode).", _ERROR),
                        "503": _json("The store is unreachable; nothing was stored.", _ERROR),
                    },
                },
                "operator",
            ),
        },
        "/api/v1/events/stream": {
            "get": protected(
                {
                    "operationId": "streamEvents",
                    "summary": "New events as server-sent events (id: the log position; "
                    "Last-Event-ID resumes), with the list's filters.",
                    "tags": ["events"],
                    "parameters": [
                        *_filters(type_pattern, times=False),
                        _position("since", "Start after this position (else at the head)."),
                        _q(
                            "Last-Event-ID",
                            "Resume after this position (wins over since).",
                            {"type": "string", "pattern": "^[0-9]{1,18}$"},
                            "header",
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "The stream, until the connection's time is up.",
                            "content": {"text/event-stream": {"schema": _SSE_MESSAGE}},
                        },
                        "400": _json("Bad parameters.", _ERROR),
                        "503": _json("The store is unreachable.", _ERROR),
                    },
                }
            )
        },
        "/api/v1/events/{id}": {
            "get": protected(
                {
                    "operationId": "getEvent",
                    "summary": "One stored event by id.",
                    "tags": ["events"],
                    "parameters": [_ID, _AS_OF],
                    "responses": {
                        "200": _json("The event.", {"$ref": "#/components/schemas/RecordedEvent"}),
                        "400": _json("Bad parameters.", _ERROR),
                        "404": _json("No event has that id (or not yet at as_of).", _ERROR),
                        "503": _json("The store is unreachable.", _ERROR),
                    },
                }
            )
        },
        "/api/v1/events/{id}/caused": {
            "get": protected(
                {
                    "operationId": "getCausedEvents",
                    "summary": "The events caused by one event (their causation_id is its "
                    "id), oldest first.",
                    "tags": ["events"],
                    "parameters": [
                        _ID,
                        _position("after", "Only events above this position."),
                        _AS_OF,
                        _LIMIT,
                    ],
                    "responses": {
                        "200": _json(
                            "The cause and a page of its effects.",
                            {
                                "type": "object",
                                "required": ["cause", "events", "next"],
                                "properties": {
                                    "cause": {"$ref": "#/components/schemas/RecordedEvent"},
                                    "events": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/RecordedEvent"},
                                    },
                                    "next": {"type": ["string", "null"]},
                                },
                            },
                        ),
                        "400": _json("Bad parameters.", _ERROR),
                        "404": _json("No event has that id.", _ERROR),
                        "503": _json("The store is unreachable.", _ERROR),
                    },
                }
            )
        },
    }
