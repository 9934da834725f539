"""Make the trimmed copies of the platforms' published descriptions the sandbox and the
conformance tests check against (``src/contexten/testing/specs/data/``).

Where the originals come from (fetch them by hand, then run this script):

* GitHub REST: the npm package ``@octokit/openapi`` (``npm pack @octokit/openapi``),
  ``generated/api.github.com.json``. Kept: the operations under ``GITHUB_PATHS`` and the
  components they reference, without prose, examples or ``x-`` extensions.
* GitHub webhooks: the npm package ``@octokit/webhooks-schemas`` (``schema.json``). Kept: the
  event definitions under ``GITHUB_WEBHOOK_EVENTS`` and what they reference.
* Linear: ``packages/sdk/src/schema.graphql`` of the linear/linear repository (the schema
  the ``@linear/sdk`` npm package is generated from). Kept whole, without descriptions.
* Codegen: ``docs/api-reference/openapi3.json`` of the codegen-sh/codegen repository. Kept
  whole.
* Slack: ``slack_sdk/web/client.py`` of slackapi/python-slack-sdk. Every Web API method the
  SDK defines, with its arguments, the required ones, the HTTP verb and whether the SDK sends
  it as JSON (the others are form-encoded or query strings), read from the source with
  ``ast``.

Usage::

    python tools/trim_platform_specs.py --openapi api.github.com.json \\
        --webhooks schema.json --linear schema.graphql --codegen openapi3.json \\
        --slack client.py --out src/contexten/testing/specs/data

Needs ``graphql-core`` (installed with the project).
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

GITHUB_PATHS = (
    "/repos/{owner}/{repo}/issues",
    "/repos/{owner}/{repo}/issues/{issue_number}",
    "/repos/{owner}/{repo}/issues/{issue_number}/comments",
    "/repos/{owner}/{repo}/issues/comments/{comment_id}",
    "/repos/{owner}/{repo}/issues/{issue_number}/labels",
    "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}",
    "/repos/{owner}/{repo}/pulls",
    "/repos/{owner}/{repo}/pulls/{pull_number}",
    "/repos/{owner}/{repo}/pulls/{pull_number}/files",
    "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
    "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
    "/repos/{owner}/{repo}/statuses/{sha}",
    "/repos/{owner}/{repo}/check-runs",
    "/repos/{owner}/{repo}/check-runs/{check_run_id}",
    "/repos/{owner}/{repo}/commits/{ref}/check-runs",
    "/rate_limit",
)

GITHUB_WEBHOOK_EVENTS = (
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "check_run",
    "status",
    "push",
)

_DROP_KEYS = frozenset({"description", "summary", "examples", "example", "externalDocs"})


def _strip(node: Any, names: bool = False) -> Any:
    """``node`` without prose and extensions; ``names``: its keys are property names (kept)."""
    if isinstance(node, dict):
        return {
            k: _strip(v, names=not names and k in ("properties", "patternProperties"))
            for k, v in node.items()
            if names or (k not in _DROP_KEYS and not k.startswith("x-"))
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _closure(doc: dict[str, Any], start: Any) -> set[str]:
    seen: set[str] = set()
    todo = list(_refs(start))
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        todo.extend(_refs(_resolve(doc, ref)))
    return seen


def _put(out: dict[str, Any], ref: str, value: Any) -> None:
    parts = ref.lstrip("#/").split("/")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def trim_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """The GitHub operations we use and the components they reference."""
    paths = {p: doc["paths"][p] for p in GITHUB_PATHS}
    out: dict[str, Any] = {
        "openapi": doc["openapi"],
        "info": {"title": doc["info"]["title"], "version": doc["info"]["version"]},
        "paths": _strip(paths),
    }
    for ref in sorted(_closure(doc, paths)):
        _put(out, ref, _strip(_resolve(doc, ref)))
    return out


def trim_webhooks(doc: dict[str, Any]) -> dict[str, Any]:
    """The webhook events we send and receive, with the definitions they reference."""
    keep = {
        name: doc["definitions"][name]
        for name in doc["definitions"]
        if name.split("$")[0] in GITHUB_WEBHOOK_EVENTS
        or name in {f"{e}_event" for e in GITHUB_WEBHOOK_EVENTS}
    }
    out: dict[str, Any] = {"$schema": doc["$schema"], "definitions": {}}
    for name, value in keep.items():
        out["definitions"][name] = _strip(value)
    for ref in sorted(_closure(doc, keep)):
        _put(out, ref, _strip(_resolve(doc, ref)))
    return out


def trim_linear(sdl: str) -> str:
    """Linear's schema without descriptions (the types and fields are all kept), except the
    input-field descriptions that document a value format ("UUID v4 format"), which the
    checks read."""
    from graphql import build_schema, is_input_object_type, print_schema

    is_input_type = is_input_object_type

    schema = build_schema(sdl)
    for named in schema.type_map.values():
        named.description = None
        for field in getattr(named, "fields", {}).values():
            if "UUID v4" not in (field.description or "") or not is_input_type(named):
                field.description = None
            for arg in getattr(field, "args", {}).values():
                arg.description = None
        for value in getattr(named, "values", {}).values():
            value.description = None
    for directive in schema.directives:
        directive.description = None
        for arg in directive.args.values():
            arg.description = None
    return print_schema(schema) + "\n"


def _call_of(func: ast.AsyncFunctionDef | ast.FunctionDef) -> tuple[str, str, bool] | None:
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "api_call"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            kinds = {k.arg for k in node.keywords}
            verb = "POST"
            for k in node.keywords:
                if k.arg == "http_verb" and isinstance(k.value, ast.Constant):
                    verb = str(k.value.value)
            return str(node.args[0].value), verb, "json" in kinds
    return None


def slack_methods(source: str) -> dict[str, Any]:
    """``{method: {"arguments", "required", "http_verb", "json"}}`` from the SDK's client."""
    tree = ast.parse(source)
    methods: dict[str, Any] = {}
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef) or cls.name != "WebClient":
            continue
        for func in cls.body:
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            call = _call_of(func)
            if call is None or func.name.startswith("_"):
                continue
            name, verb, as_json = call
            kwonly = func.args.kwonlyargs
            defaults = func.args.kw_defaults
            required = [a.arg for a, d in zip(kwonly, defaults, strict=True) if d is None]
            methods[name] = {
                "arguments": sorted(a.arg for a in kwonly),
                "required": sorted(required),
                "http_verb": verb,
                "json": as_json,
            }
    return dict(sorted(methods.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openapi", type=Path, required=True)
    parser.add_argument("--webhooks", type=Path, required=True)
    parser.add_argument("--linear", type=Path, required=True)
    parser.add_argument("--codegen", type=Path, required=True)
    parser.add_argument("--slack", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    def dump(name: str, value: Any) -> None:
        text = json.dumps(value, indent=None, separators=(",", ":"), sort_keys=True)
        (out / name).write_text(text + "\n", encoding="utf-8")

    dump("github-openapi.json", trim_openapi(json.loads(args.openapi.read_text())))
    dump("github-webhooks.json", trim_webhooks(json.loads(args.webhooks.read_text())))
    (out / "linear-schema.graphql").write_text(trim_linear(args.linear.read_text()))
    dump("codegen-openapi.json", json.loads(args.codegen.read_text()))
    dump("slack-methods.json", slack_methods(args.slack.read_text()))
    print("written:", ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
