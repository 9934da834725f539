"""The validators behind the sandbox's strictness and the conformance suite."""

from __future__ import annotations

from typing import Any

from contexten.testing.specs import (
    GraphQLSchemaSpec,
    OpenAPIDescription,
    SlackMethodTable,
    github_openapi,
    slack_methods,
)
from contexten.testing.specs.completion import SchemaCompleter

DOC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"version": "1"},
    "paths": {
        "/things/{id}": {
            "patch": {
                "parameters": [
                    {"in": "path", "name": "id", "required": True, "schema": {"type": "integer"}}
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/things/special": {"get": {"responses": {"200": {"description": "ok"}}}},
    },
    "components": {
        "schemas": {
            "Thing": {
                "type": "object",
                "properties": {
                    "body": {"type": "string", "nullable": True},
                    "state": {"type": "string", "enum": ["open", "closed"]},
                },
            }
        }
    },
}


def test_openapi_30_nullable_refs_and_parameters() -> None:
    spec = OpenAPIDescription(DOC, name="t")
    assert spec.check_request("PATCH", "/things/3", body={"body": None}, has_body=True) == []
    assert spec.check_request("PATCH", "/things/3", body={"state": "gone"}, has_body=True)
    assert spec.check_request("PATCH", "/things/x", body={}, has_body=True) == [
        "id: 'x' is not of type 'integer'"
    ]
    assert spec.check_request("PATCH", "/things/3") == ["a JSON body is required"]
    assert spec.check_request("DELETE", "/things/3") == ["t: no operation DELETE /things/3"]
    found = spec.find("GET", "/things/special")
    assert found is not None
    assert found.template == "/things/special"


def test_github_description_knows_the_literal_comment_route() -> None:
    op = github_openapi().find("PATCH", "/repos/a/b/issues/comments/5")
    assert op is not None
    assert op.template == "/repos/{owner}/{repo}/issues/comments/{comment_id}"


def test_completion_fills_required_fields_and_drops_forbidden_ones() -> None:
    schemas: dict[str, Any] = {
        "User": {
            "type": "object",
            "required": ["login", "id", "site_admin", "email", "plan"],
            "additionalProperties": False,
            "properties": {
                "login": {"type": "string"},
                "id": {"type": "integer"},
                "site_admin": {"type": "boolean"},
                "email": {"type": ["string", "null"]},
                "plan": {"type": "object", "required": ["name"], "properties": {"name": {}}},
            },
        }
    }

    def deref(schema: Any) -> Any:
        if isinstance(schema, dict) and "$ref" in schema:
            return schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    done = SchemaCompleter(deref).complete({"$ref": "#/User"}, {"login": "ada", "extra": 1})
    assert done == {
        "login": "ada",
        "id": 0,
        "site_admin": False,
        "email": None,
        "plan": {"name": None},
    }


def test_slack_method_table() -> None:
    table = slack_methods()
    assert table.check("chat.postMessage", {"channel": "C1", "text": "x"}, as_json=True) is None
    assert table.check(
        "reactions.add", {"channel": "C1", "timestamp": "1", "name": "x"}, as_json=True
    )
    assert table.check("chat.update", {"channel": "C1"}, as_json=False) == (
        "invalid_arguments",
        ["chat.update needs ts"],
    )
    unknown = table.check("chat.delete", {"channel": "C", "ts": "1", "colour": "x"}, as_json=False)
    assert unknown is None  # Slack ignores unknown arguments...
    strict = table.check(
        "chat.delete", {"channel": "C", "ts": "1", "colour": "x"}, as_json=False, strict=True
    )
    assert strict == ("invalid_arguments", ["chat.delete documents no argument colour"])
    assert SlackMethodTable({}).check("a.b", {}, as_json=False) == (
        "unknown_method",
        ["no Slack method 'a.b'"],
    )


SDL = """
type Query { node(id: ID!): Node  me: User! }
interface Node { id: ID! }
type User implements Node { id: ID! name: String  friends: [User!]! }
type Team implements Node { id: ID! key: String! }
"""


def test_graphql_selection_with_aliases_fragments_and_typename() -> None:
    spec = GraphQLSchemaSpec(SDL, name="t")
    checked = spec.check(
        "query($id: ID!) { node(id: $id) { id ... on User { who: name } ...T __typename } }"
        " fragment T on Team { key }",
        {"id": "u1"},
    )
    assert not isinstance(checked, list)
    data = {"node": {"__typename": "User", "id": "u1", "name": "Ada", "friends": [], "x": 1}}
    assert spec.select(checked, data) == {"node": {"id": "u1", "who": "Ada", "__typename": "User"}}
    me = spec.check("{ me { name friends { id } } }")
    assert not isinstance(me, list)
    answer = {"me": {"name": "Ada", "friends": [{"id": "2", "name": "Bob"}], "id": "1"}}
    assert spec.select(me, answer) == {"me": {"name": "Ada", "friends": [{"id": "2"}]}}
    problems = spec.check("{ me { nope } }")
    assert isinstance(problems, list)
    assert problems[0].startswith("Cannot query field 'nope' on type 'User'.")
