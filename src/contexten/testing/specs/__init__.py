"""The platforms' own descriptions, for checking requests and payloads against them.

Trimmed copies of what GitHub, Linear, Slack and Codegen publish (``data/``, with their
licences and versions in ``data/README.md``): GitHub's OpenAPI description and webhook
schemas, Linear's GraphQL schema, Slack's Web API method table, Codegen's OpenAPI
description. The sandbox refuses what they refuse; the conformance tests check every
request the clients can send. Each loader reads its file once per process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from contexten.testing.specs.graphql import (
    CheckedRequest,
    GraphQLSchemaSpec,
    check_object,
    nulled,
)
from contexten.testing.specs.openapi import OpenAPIDescription, Operation
from contexten.testing.specs.slack import SlackMethod, SlackMethodTable
from contexten.testing.specs.webhooks import WebhookSchemas

__all__ = [
    "DATA",
    "CheckedRequest",
    "GraphQLSchemaSpec",
    "OpenAPIDescription",
    "Operation",
    "SlackMethod",
    "SlackMethodTable",
    "WebhookSchemas",
    "check_object",
    "codegen_openapi",
    "github_openapi",
    "github_webhooks",
    "linear_schema",
    "nulled",
    "slack_methods",
]

DATA = Path(__file__).parent / "data"
"""Where the trimmed descriptions are."""


@cache
def github_openapi() -> OpenAPIDescription:
    """GitHub's REST description (the operations Contexten calls)."""
    return OpenAPIDescription.load(DATA / "github-openapi.json", name="github")


@cache
def github_webhooks() -> WebhookSchemas:
    """GitHub's webhook payload schemas."""
    return WebhookSchemas.load(DATA / "github-webhooks.json")


@cache
def linear_schema() -> GraphQLSchemaSpec:
    """Linear's GraphQL schema."""
    return GraphQLSchemaSpec.load(DATA / "linear-schema.graphql", name="linear")


@cache
def codegen_openapi() -> OpenAPIDescription:
    """Codegen's Developer API description."""
    return OpenAPIDescription.load(DATA / "codegen-openapi.json", name="codegen")


@cache
def slack_methods() -> SlackMethodTable:
    """Slack's Web API method table."""
    return SlackMethodTable.load(DATA / "slack-methods.json")
