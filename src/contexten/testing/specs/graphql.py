"""Check GraphQL requests against a schema, and answer only the fields a document selects.

Validation is graphql-core's, the same rules a GraphQL server applies before executing:
the document must parse, every field and argument must exist, fragments must fit, and the
variables must coerce to their declared types (an ``ID!`` given a number, an input object
with a field the schema does not have: refused). :meth:`GraphQLSchemaSpec.select` then
shapes a resolver's answer to the document's selection, with aliases, fragments and
``__typename``, the way an executor would: fields nobody selected are not in the answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    get_named_type,
    parse,
    type_from_ast,
    validate,
)
from graphql.execution.values import get_variable_values

__all__ = ["CheckedRequest", "GraphQLSchemaSpec", "check_object", "nulled"]

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request that passed validation.

    Attributes:
        document: the parsed document.
        operation: the operation to run.
        variables: the variables, coerced to their declared types.
    """

    document: DocumentNode
    operation: OperationDefinitionNode
    variables: JSON


class GraphQLSchemaSpec:
    """A GraphQL schema loaded for validation.

    Args:
        sdl: the schema in SDL.
        name: how errors name it (``linear``).
    """

    def __init__(self, sdl: str, *, name: str) -> None:
        self.name = name
        self.schema: GraphQLSchema = build_schema(sdl)

    @classmethod
    def load(cls, path: Path, *, name: str) -> GraphQLSchemaSpec:
        """Read a schema from an SDL file."""
        return cls(path.read_text(encoding="utf-8"), name=name)

    def check(
        self, query: Any, variables: Any = None, operation_name: Any = None
    ) -> CheckedRequest | list[str]:
        """The validated request, or the problems a server would answer with."""
        if not isinstance(query, str) or not query.strip():
            return ["query must be a non-empty string"]
        if variables is not None and not isinstance(variables, Mapping):
            return ["variables must be an object"]
        if operation_name is not None and not isinstance(operation_name, str):
            return ["operationName must be a string"]
        try:
            document = parse(query)
        except GraphQLError as e:
            return [e.message]
        errors = validate(self.schema, document)
        if errors:
            return [e.message for e in errors[:20]]
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is not None:
            operations = [o for o in operations if o.name and o.name.value == operation_name]
        if len(operations) != 1:
            return ["the document must name exactly one operation to run"]
        operation = operations[0]
        coerced = get_variable_values(
            self.schema, operation.variable_definitions or (), dict(variables or {})
        )
        if isinstance(coerced, list):
            return [e.message for e in coerced[:20]]
        # graphql-core 3.3 wraps the coerced values; 3.2 returns them as a dict.
        found: Any = getattr(coerced, "coerced", coerced)
        values: dict[str, Any] = dict(found)
        problems = self._documented_formats(operation, values)
        if problems:
            return problems
        return CheckedRequest(document, operation, values)

    def _documented_formats(
        self, operation: OperationDefinitionNode, values: Mapping[str, Any]
    ) -> list[str]:
        """Values refused by a format the schema documents in prose: Linear's input ``id``
        fields are "in UUID v4 format" (its API refuses other UUIDs)."""
        problems: list[str] = []
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            var_type = type_from_ast(self.schema, definition.type)
            if var_type is not None and name in values:
                problems += _formats(var_type, values[name], f"${name}")
        return problems

    def select(self, request: CheckedRequest, data: Mapping[str, Any]) -> JSON:
        """``data`` (the answer, keyed by field name) cut to what ``request`` selects.

        A selected field that ``data`` lacks is answered ``null``, as a nullable field
        would be.
        """
        root = self.schema.get_root_type(request.operation.operation)
        fragments = {
            d.name.value: d
            for d in request.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        return _Selector(self.schema, fragments).select(request.operation.selection_set, root, data)


def nulled(schema_spec: GraphQLSchemaSpec, request: CheckedRequest, data: Any) -> Any:
    """An answer to ``request`` with every selected field the schema lets be null set to null
    (the leanest answer Linear may give; what a client must survive)."""
    from graphql import GraphQLNonNull

    def walk(selection: SelectionSetNode | None, parent: Any, value: Any) -> Any:
        if selection is None or value is None:
            return value
        if isinstance(value, list):
            return [walk(selection, parent, v) for v in value]
        if not isinstance(value, dict) or not hasattr(parent, "fields"):
            return value
        out = dict(value)
        for node in selection.selections:
            if not isinstance(node, FieldNode) or node.name.value == "__typename":
                continue
            key = node.alias.value if node.alias else node.name.value
            field = parent.fields.get(node.name.value)
            if field is None or key not in out:
                continue
            if not isinstance(field.type, GraphQLNonNull):
                out[key] = None
            else:
                out[key] = walk(node.selection_set, get_named_type(field.type), out[key])
        return out

    root = schema_spec.schema.get_root_type(request.operation.operation)
    # The root field itself stays: a null there is an error answer, not a lean one.
    result = dict(data)
    for node in request.operation.selection_set.selections:
        if isinstance(node, FieldNode):
            key = node.alias.value if node.alias else node.name.value
            field = root.fields.get(node.name.value) if root is not None else None
            if field is not None and key in result:
                result[key] = walk(node.selection_set, get_named_type(field.type), result[key])
    return result


def _formats(input_type: Any, value: Any, where: str) -> list[str]:
    named = get_named_type(input_type)
    if value is None or not isinstance(named, GraphQLInputObjectType):
        return []
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _formats(named, v, f"{where}[{i}]")]
    if not isinstance(value, Mapping):
        return []
    problems: list[str] = []
    for key, field in named.fields.items():
        if key not in value or value[key] is None:
            continue
        place = f"{where}.{key}"
        if "UUID v4" in (field.description or ""):
            try:
                ok = uuid.UUID(str(value[key])).version == 4
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{place}: {named.name}.{key} must be a UUID v4")
        problems += _formats(field.type, value[key], place)
    return problems


class _Selector:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]):
        self.schema = schema
        self.fragments = fragments

    def _fields(
        self, selection: SelectionSetNode, parent: Any, data: Mapping[str, Any]
    ) -> list[FieldNode]:
        out: list[FieldNode] = []
        for node in selection.selections:
            if isinstance(node, FieldNode):
                out.append(node)
                continue
            if isinstance(node, FragmentSpreadNode):
                fragment = self.fragments[node.name.value]
                condition: str | None = fragment.type_condition.name.value
                inner = fragment.selection_set
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                inner = node.selection_set
            else:  # pragma: no cover - graphql-core has no other selection kinds
                continue
            if condition is None or self._applies(condition, parent, data):
                out.extend(self._fields(inner, parent, data))
        return out

    def _applies(self, condition: str, parent: Any, data: Mapping[str, Any]) -> bool:
        concrete = data.get("__typename") or getattr(parent, "name", None)
        if concrete == condition:
            return True
        target = self.schema.get_type(condition)
        actual = self.schema.get_type(str(concrete)) if concrete else None
        if isinstance(actual, GraphQLObjectType) and target is not None:
            return self.schema.is_sub_type(target, actual)  # type: ignore[arg-type]
        return False

    def select(self, selection: SelectionSetNode, parent: Any, data: Mapping[str, Any]) -> JSON:
        out: JSON = {}
        for node in self._fields(selection, parent, data):
            name = node.name.value
            key = node.alias.value if node.alias else name
            if name == "__typename":
                out[key] = data.get("__typename") or parent.name
                continue
            field = parent.fields.get(name) if hasattr(parent, "fields") else None
            child_type = get_named_type(field.type) if field is not None else None
            value = self._value(node, child_type, data.get(name))
            if key in out and isinstance(out[key], dict) and isinstance(value, dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out

    def _value(self, node: FieldNode, child_type: Any, value: Any) -> Any:
        if node.selection_set is None or value is None:
            return value
        if isinstance(value, list):
            return [self._value(node, child_type, v) for v in value]
        if isinstance(value, Mapping):
            concrete = value.get("__typename")
            parent = self.schema.get_type(concrete) if isinstance(concrete, str) else child_type
            return self.select(node.selection_set, parent or child_type, value)
        return value


_SCALARS: dict[str, tuple[type, ...]] = {
    "String": (str,),
    "ID": (str,),
    "DateTime": (str,),
    "TimelessDate": (str,),
    "Float": (int, float),
    "Int": (int,),
    "Boolean": (bool,),
}


def check_object(schema: GraphQLSchema, type_name: str, value: Any, where: str) -> list[str]:
    """Problems of ``value`` as an instance of object type ``type_name`` (a webhook payload).

    Every non-null field must be present and not null; present fields must have their
    type (scalars by JSON type, objects recursively, lists item by item).
    """
    from graphql import GraphQLList, GraphQLNonNull

    named = schema.get_type(type_name)
    if not isinstance(named, GraphQLObjectType):
        return [f"{where}: no object type {type_name}"]
    if not isinstance(value, Mapping):
        return [f"{where}: expected an object ({type_name})"]
    problems: list[str] = []
    for name, field in named.fields.items():
        place = f"{where}.{name}"
        field_type = field.type
        present = value.get(name)
        if isinstance(field_type, GraphQLNonNull):
            if present is None:
                problems.append(f"{place}: required by {type_name} ({field_type})")
                continue
            field_type = field_type.of_type
        if present is None:
            continue
        problems += _check_typed(schema, field_type, present, place, GraphQLList, GraphQLNonNull)
    return problems


def _check_typed(
    schema: GraphQLSchema, field_type: Any, value: Any, place: str, list_t: Any, nonnull_t: Any
) -> list[str]:
    if isinstance(field_type, nonnull_t):
        if value is None:
            return [f"{place}: must not be null"]
        field_type = field_type.of_type
    if value is None:
        return []
    if isinstance(field_type, list_t):
        if not isinstance(value, list):
            return [f"{place}: expected a list"]
        out: list[str] = []
        for i, item in enumerate(value):
            out += _check_typed(
                schema, field_type.of_type, item, f"{place}[{i}]", list_t, nonnull_t
            )
        return out
    if isinstance(field_type, GraphQLObjectType):
        return check_object(schema, field_type.name, value, place)
    allowed = _SCALARS.get(getattr(field_type, "name", ""))
    if allowed is not None and (
        not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool))
    ):
        return [f"{place}: expected {field_type.name}, got {type(value).__name__}"]
    return []
