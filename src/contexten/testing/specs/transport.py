"""An httpx transport that checks every request against the platform's published description.

Wrap the sandbox's transport with it (``sandbox.clients(transport=CheckingTransport(
sandbox.transport()))``) and every call a client makes is checked on the way out: GitHub and
Codegen requests against their OpenAPI descriptions (operation, parameters, body, and no
undocumented headers), Linear documents and variables against Linear's schema, Slack calls
against Slack's method table (method, arguments, required ones, JSON or form). The problems
found are kept in :attr:`CheckingTransport.checked`; the request goes on either way, so the
test sees what the platform would have answered too.

With ``answers=True`` the answers are checked too (GitHub's and Codegen's 2xx JSON bodies
against the operation's response schema), which is how the sandbox is held to answering
with the fields the descriptions require.

With ``lean=True`` the answers are made as lean as the description allows: every field it
lets be ``null`` is ``null`` (GitHub, Codegen, and the selected Linear fields), which is how
a client's handling of absent values (an undo restoring an empty description...) is tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

import httpx

from contexten.testing.specs import (
    codegen_openapi,
    github_openapi,
    linear_schema,
    slack_methods,
)
from contexten.testing.specs.graphql import CheckedRequest, nulled
from contexten.testing.specs.openapi import OpenAPIDescription

__all__ = ["CheckedCall", "CheckingTransport"]

# Headers any HTTP client sends; everything else must be in the operation's description.
_TRANSPORT_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "traceparent",
        "tracestate",
    }
)
# Headers GitHub documents for every call (not per operation) in its REST API guide.
_GITHUB_HEADERS: Final = frozenset({"x-github-api-version"})


@dataclass(slots=True)
class CheckedCall:
    """One request and what was wrong with it.

    Attributes:
        platform: ``github``, ``linear``, ``slack`` or ``codegen``.
        method: HTTP method.
        target: the operation (``PATCH /repos/{owner}/{repo}/pulls/{pull_number}``, the
            GraphQL root field, the Slack method).
        problems: what the description refuses (empty: conformant).
    """

    platform: str
    method: str
    target: str
    problems: list[str] = field(default_factory=list)


class CheckingTransport(httpx.AsyncBaseTransport):
    """Checks each request, then hands it to ``inner`` (see the module docstring).

    Args:
        inner: the transport that answers (the sandbox's).
        lean: answer with every nullable field ``null``.
        answers: check the answers against the response schemas too.
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, lean: bool = False, answers: bool = False
    ) -> None:
        self.inner = inner
        self.lean = lean
        self.answers = answers
        self.checked: list[CheckedCall] = []

    @property
    def problems(self) -> list[str]:
        """Every problem found, prefixed by its request."""
        return [
            f"{c.platform} {c.method} {c.target}: {p}" for c in self.checked for p in c.problems
        ]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        platform, path = _platform(request.url.path)
        call, graphql = self._check(platform, path, request, body)
        self.checked.append(call)
        response = await self.inner.handle_async_request(request)
        if platform in ("slack", "linear") and not self.lean:
            return response
        if platform == "slack" or not (self.lean or self.answers):
            return response
        raw = await response.aread()
        if self.answers and platform in ("github", "codegen") and raw:
            spec = github_openapi() if platform == "github" else codegen_openapi()
            if response.status_code < 300:
                answer_problems = spec.check_response(
                    request.method, path, response.status_code, json.loads(raw)
                )
                call.problems += [f"answer {p}" for p in answer_problems]
        if not self.lean:
            return httpx.Response(response.status_code, headers=response.headers, content=raw)
        try:
            answer = json.loads(raw)
        except ValueError:
            return httpx.Response(response.status_code, headers=response.headers, content=raw)
        leaner = self._lean(platform, path, request.method, response.status_code, answer, graphql)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, json=leaner)

    def _check(
        self, platform: str, path: str, request: httpx.Request, body: bytes
    ) -> tuple[CheckedCall, CheckedRequest | None]:
        method = request.method
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if platform == "slack":
            name = path.strip("/")
            args = dict(parse_qsl(request.url.query.decode()))
            as_json = media == "application/json"
            if as_json:
                args.update(json.loads(body))
            elif body:
                args.update(parse_qsl(body.decode()))
            refused = slack_methods().check(name, args, as_json=as_json, strict=True)
            return CheckedCall("slack", method, name, refused[1] if refused else []), None
        if platform == "linear":
            document = json.loads(body) if body else {}
            checked = linear_schema().check(
                document.get("query"), document.get("variables"), document.get("operationName")
            )
            if isinstance(checked, list):
                return CheckedCall("linear", method, "graphql", checked), None
            first = checked.operation.selection_set.selections[0]
            root = getattr(getattr(first, "name", None), "value", "?")
            return CheckedCall("linear", method, root, []), checked
        spec = github_openapi() if platform == "github" else codegen_openapi()
        return self._check_openapi(spec, platform, path, request, body, media), None

    @staticmethod
    def _check_openapi(
        spec: OpenAPIDescription,
        platform: str,
        path: str,
        request: httpx.Request,
        body: bytes,
        media: str,
    ) -> CheckedCall:
        op = spec.find(request.method, path)
        target = f"{request.method} {op.template if op else path}"
        problems: list[str] = []
        if body and media != "application/json":
            problems.append(f"body sent as {media or 'no content type'}, not JSON")
        decoded: Any = None
        if body:
            try:
                decoded = json.loads(body)
            except ValueError:
                problems.append("body is not JSON")
        query = dict(parse_qsl(request.url.query.decode()))
        problems += spec.check_request(
            request.method, path, query=query, body=decoded, has_body=bool(body)
        )
        if op is not None:
            documented = {
                str(p.get("name", "")).lower()
                for p in op.spec.get("parameters", [])
                if p.get("in") == "header"
            }
            allowed = _TRANSPORT_HEADERS | documented
            if platform == "github":
                allowed |= _GITHUB_HEADERS
            for name in request.headers:
                if name.lower() not in allowed:
                    problems.append(f"header {name!r} is not documented")
        return CheckedCall(platform, request.method, target, problems)

    def _lean(
        self,
        platform: str,
        path: str,
        method: str,
        status: int,
        answer: Any,
        graphql: CheckedRequest | None,
    ) -> Any:
        if platform == "linear":
            if graphql is None or not isinstance(answer, dict) or answer.get("errors"):
                return answer
            data = answer.get("data")
            if not isinstance(data, dict):
                return answer
            return {**answer, "data": nulled(linear_schema(), graphql, data)}
        spec = github_openapi() if platform == "github" else codegen_openapi()
        schema = spec.response_schema(method, path, status) if status < 300 else None
        return answer if schema is None else spec.nulled(schema, answer)


def _platform(path: str) -> tuple[str, str]:
    """The platform a sandbox path belongs to, and the path within it."""
    for prefix, platform in (
        ("/github", "github"),
        ("/linear", "linear"),
        ("/slack/api", "slack"),
        ("/codegen", "codegen"),
    ):
        if path.startswith(prefix + "/"):
            return platform, path[len(prefix) :]
    return "unknown", path
