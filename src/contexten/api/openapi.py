"""The OpenAPI description of ``/api/v1`` read-model routes (:mod:`contexten.api.v1`).

Merged into the ingress's document by :func:`add_read_api` when an App serves them.
"""

from __future__ import annotations

from typing import Any, Final

from contexten.api.v1 import DEFAULT_LIMIT, MAX_LIMIT
from contexten.bus.dead_letters import DeadLetterStatus
from contexten.ingress.openapi import protected_operation
from contexten.workflows.history import WorkflowStatus

__all__ = ["read_api_paths"]

_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_OBJ: Final = {"type": "object"}
_STRING_OR_NULL: Final = {"type": ["string", "null"]}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _q(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _id(description: str) -> dict[str, Any]:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


_LIMIT: Final = _q(
    "limit",
    "Rows per page.",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
_CURSOR: Final = _q("cursor", "The next_cursor of the previous page.", {"type": "string"})
_TIME: Final = {"type": "string", "format": "date-time"}
_AS_OF: Final = _q("as_of", "As it was at this time (ISO 8601 with offset).", _TIME)

_PAGE: Final = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {"items": {"type": "array", "items": _OBJ}, "next_cursor": _STRING_OR_NULL},
}


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    parameters: list[dict[str, Any]],
    ok: tuple[str, str, dict[str, Any]],
    *,
    not_found: bool = False,
    conflict: bool = False,
    role: str = "viewer",
    conflict_schema: dict[str, Any] = _ERROR,
) -> dict[str, Any]:
    code, description, schema = ok
    responses: dict[str, Any] = {
        code: _json(description, schema),
        "400": _json("Bad parameters.", _ERROR),
        "503": _json("The store is unreachable.", _ERROR),
    }
    if not_found:
        responses["404"] = _json("No such id.", _ERROR)
    if conflict:
        responses["409"] = _json(
            "Not in a state that allows it (nothing changed).", conflict_schema
        )
    return protected_operation(
        {
            "operationId": operation_id,
            "summary": summary,
            "tags": [tag],
            "parameters": parameters,
            "responses": responses,
        },
        role,
    )


_CALL: Final = {
    "type": "object",
    "required": ["seq", "kind", "name", "status", "effect"],
    "properties": {
        "seq": {"type": "integer"},
        "kind": {"type": "string"},
        "name": {"type": "string"},
        "status": {"type": "string"},
        "effect": _STRING_OR_NULL,
        "event_versions": {"type": "array", "items": {"type": "integer"}},
    },
}
_REFUSAL: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string", "description": "Why (nothing was recorded)."},
        "effects": {
            "type": "array",
            "items": {"type": "string"},
            "description": "What the calls it would supersede already did.",
        },
        "point": {"type": "integer"},
        "forceable": {"type": "boolean", "description": "Whether force lets it through."},
    },
}
_MIGRATION_PLAN: Final = {
    "type": "object",
    "required": ["workflow_id", "point", "resumes_at", "superseded", "effects", "migrated"],
    "properties": {
        "workflow_id": {"type": "string"},
        "name": {"type": "string"},
        "from_version": {"type": "string"},
        "to_version": {"type": "string"},
        "point": {"type": "integer", "description": "The last compatible call (kept)."},
        "resumes_at": {"type": "integer"},
        "recorded_calls": {"type": "integer"},
        "divergence": _STRING_OR_NULL,
        "superseded": {"type": "array", "items": _CALL},
        "effects": {
            "type": "array",
            "items": _CALL,
            "description": "The superseded calls that already acted outside the instance.",
        },
        "refusal": _STRING_OR_NULL,
        "migrated": {"type": "boolean"},
        "dry_run": {"type": "boolean"},
    },
}


def _body(properties: dict[str, Any], *, required: list[str]) -> dict[str, Any]:
    """A JSON object request body with exactly these properties (anything else: 400)."""
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def read_api_paths() -> dict[str, Any]:
    """The ``/api/v1`` read-model paths (a fresh dict each call)."""
    wf_statuses = [s.value for s in WorkflowStatus]
    dl_statuses = [*(s.value for s in DeadLetterStatus), "all"]
    page = ("200", "One page.", _PAGE)
    accepted = ("202", "Requested.", _OBJ)
    subscription = _q("subscription", "Only this subscription's letters.", {"type": "string"})
    return {
        "/api/v1/workflows": {
            "get": _op(
                "listWorkflows",
                "Workflow instances, most recently updated first (the workflows read model).",
                "workflows",
                [
                    _q("status", "Only this status.", {"enum": wf_statuses}),
                    _q("name", "Only this workflow.", {"type": "string"}),
                    _q("since", "Updated at or after (ISO 8601 with offset).", _TIME),
                    _q("until", "Updated before (ISO 8601 with offset).", _TIME),
                    _CURSOR,
                    _LIMIT,
                ],
                page,
            )
        },
        "/api/v1/workflows/{id}": {
            "get": _op(
                "getWorkflow",
                "One instance with its history (and, for a state machine, its states).",
                "workflows",
                [_id("The workflow instance id."), _AS_OF],
                ("200", "The instance.", _OBJ),
                not_found=True,
            )
        },
        "/api/v1/workflows/{id}/cancel": {
            "post": _op(
                "cancelWorkflow",
                "Cancel an instance: compensate its completed steps (operator; audited).",
                "workflows",
                [_id("The workflow instance id.")],
                accepted,
                not_found=True,
                conflict=True,
                role="operator",
            )
        },
        "/api/v1/workflows/{id}/redrive": {
            "post": _op(
                "redriveWorkflow",
                "Run a failed instance again from where it failed (operator; audited).",
                "workflows",
                [_id("The workflow instance id.")],
                accepted,
                not_found=True,
                conflict=True,
                role="operator",
            )
        },
        "/api/v1/workflows/{id}/migrate": {
            "post": {
                **_op(
                    "migrateWorkflow",
                    "Move a blocked instance to a registered version from its last compatible "
                    "point, verified by replay first; dry_run only plans (operator; audited).",
                    "workflows",
                    [_id("The workflow instance id.")],
                    ("200", "The plan (carried out unless dry_run).", _MIGRATION_PLAN),
                    not_found=True,
                    conflict=True,
                    role="operator",
                    conflict_schema=_REFUSAL,
                ),
                "requestBody": _body(
                    {
                        "to_version": {
                            "type": ["integer", "string"],
                            "minLength": 1,
                            "maxLength": 100,
                            "description": "A registered version of the instance's workflow.",
                        },
                        "force": {
                            "type": "boolean",
                            "default": False,
                            "description": "Supersede recorded calls that already made effects "
                            "(they are neither undone nor compensated).",
                        },
                        "dry_run": {
                            "type": "boolean",
                            "default": False,
                            "description": "Answer the plan; record nothing.",
                        },
                    },
                    required=["to_version"],
                ),
            }
        },
        "/api/v1/workflows/{id}/fork": {
            "post": {
                **_op(
                    "forkWorkflow",
                    "Start a new instance from an instance's input on the newest version, "
                    "linked to it (operator; audited).",
                    "workflows",
                    [_id("The workflow instance id.")],
                    (
                        "201",
                        "The new instance.",
                        {
                            "type": "object",
                            "required": ["workflow_id", "forked_as", "cancel_old"],
                            "properties": {
                                "workflow_id": {"type": "string"},
                                "forked_as": {"type": "string"},
                                "cancel_old": {"type": "boolean"},
                            },
                        },
                    ),
                    not_found=True,
                    conflict=True,
                    role="operator",
                ),
                "requestBody": _body(
                    {
                        "cancel_old": {
                            "type": "boolean",
                            "default": False,
                            "description": "Cancel the old instance (compensating what it "
                            "did) instead of leaving it as it is.",
                        }
                    },
                    required=[],
                ),
            }
        },
        "/api/v1/workflow-versions": {
            "get": _op(
                "listWorkflowVersions",
                "Open instances (and how many are blocked) per workflow and version.",
                "workflows",
                [],
                ("200", "One item per version with open instances.", _OBJ),
            )
        },
        "/api/v1/dead-letters": {
            "get": _op(
                "listDeadLetters",
                "Dead letters, oldest first (default: parked).",
                "dead letters",
                [
                    subscription,
                    _q("status", "Which letters.", {"enum": dl_statuses}),
                    _CURSOR,
                    _LIMIT,
                ],
                page,
            )
        },
        "/api/v1/dead-letters/counts": {
            "get": _op(
                "countDeadLetters",
                "Exact letter counts by subscription and status.",
                "dead letters",
                [],
                ("200", "The counts.", _OBJ),
            )
        },
        "/api/v1/dead-letters/redrive": {
            "post": _op(
                "redriveDeadLetters",
                "Redrive every parked letter, or a subscription's (operator; audited).",
                "dead letters",
                [subscription],
                ("200", "How many matched and were redriven.", _OBJ),
                role="operator",
            )
        },
        "/api/v1/dead-letters/discard": {
            "post": _op(
                "discardDeadLetters",
                "Discard every parked letter, or a subscription's (operator; audited).",
                "dead letters",
                [subscription],
                ("200", "How many matched and were discarded.", _OBJ),
                role="operator",
            )
        },
        "/api/v1/dead-letters/{id}": {
            "get": _op(
                "getDeadLetter",
                "One dead letter.",
                "dead letters",
                [_id("The letter id.")],
                ("200", "The letter.", _OBJ),
                not_found=True,
            )
        },
        "/api/v1/dead-letters/{id}/redrive": {
            "post": _op(
                "redriveDeadLetter",
                "Send a parked letter's event back to its subscription (operator; audited).",
                "dead letters",
                [_id("The letter id.")],
                ("200", "Redriven.", _OBJ),
                not_found=True,
                conflict=True,
                role="operator",
            )
        },
        "/api/v1/dead-letters/{id}/discard": {
            "post": _op(
                "discardDeadLetter",
                "Give up on a parked letter (operator; audited).",
                "dead letters",
                [_id("The letter id.")],
                ("200", "Discarded.", _OBJ),
                not_found=True,
                conflict=True,
                role="operator",
            )
        },
        "/api/v1/work-items": {
            "get": _op(
                "searchWorkItems",
                "Work items whose correlation id starts with a prefix.",
                "work items",
                [_q("prefix", "Correlation id prefix.", {"type": "string"}), _LIMIT],
                ("200", "The work items.", _OBJ),
            )
        },
        "/api/v1/work-items/{id}": {
            "get": _op(
                "getWorkItem",
                "A work item and a page of its timeline, in log order.",
                "work items",
                [
                    _id("The correlation id."),
                    _q(
                        "after",
                        "Entries after this log position.",
                        {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    ),
                    _AS_OF,
                    _LIMIT,
                ],
                ("200", "The work item and timeline.", _OBJ),
                not_found=True,
            )
        },
        "/api/v1/schedules": {
            "get": _op(
                "listSchedules",
                "Each schedule that has run on the store: paused, last tick and run, counts.",
                "schedules",
                [_LIMIT],
                (
                    "200",
                    "The schedules in name order (truncated: more than limit exist).",
                    {
                        "type": "object",
                        "required": ["items", "truncated"],
                        "properties": {
                            "items": {"type": "array", "items": _OBJ},
                            "truncated": {"type": "boolean"},
                        },
                    },
                ),
            )
        },
        **{
            f"/api/v1/schedules/{{id}}/{verb}": {
                "post": _op(
                    f"{verb}Schedule",
                    f"{summary} (operator; audited).",
                    "schedules",
                    [_id("The schedule name."), *extra],
                    accepted,
                    not_found=True,
                    role="operator",
                )
            }
            for verb, summary, extra in (
                ("pause", "Stop a schedule firing; ticks while paused never run", []),
                ("resume", "Let a paused schedule fire again from its next tick", []),
                ("trigger", "Start one run now, paused or not", []),
                (
                    "backfill",
                    "Run every tick in [from, to] that has no run yet (at most 1,000)",
                    [
                        {
                            **_q("from", "First tick time (ISO 8601 with offset).", _TIME),
                            "required": True,
                        },
                        _q("to", "Last tick time (ISO 8601 with offset; default now).", _TIME),
                    ],
                ),
            )
        },
        "/api/v1/projections": {
            "get": _op(
                "listProjections",
                "Each read model's position, lag, version and state.",
                "operations",
                [],
                ("200", "The projections.", _OBJ),
            )
        },
        "/api/v1/platforms": {
            "get": _op(
                "listPlatforms",
                "Per platform: webhooks, actions, errors; live breaker state.",
                "operations",
                [],
                ("200", "The platforms.", _OBJ),
            )
        },
    }
