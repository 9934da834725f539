"""The sandbox's Codegen agent API: runs that progress on their own.

A run goes ``queued`` → ``running`` (after ``agent_run_start_after`` s) → ``completed`` (after
``agent_run_duration`` s more), or ``failed`` when its prompt contains ``[sandbox:fail]`` or
its metadata says ``{"sandbox_outcome": "failed"}``. A completed run whose metadata names a
``repo`` (``"owner/name"``) opens a pull request there in the GitHub emulator, like the real
agent does; the branch and title carry the Linear identifier found in the prompt, so the
pull-request webhook correlates.

As the real API, it sends no webhooks (Codegen documents none: clients poll a run's status)
and honours no ``Idempotency-Key`` (undocumented). Requests are checked against Codegen's
published OpenAPI description and refused with FastAPI's 422 ``detail`` shape.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contexten.testing.sandbox.core import Core, Emulator, bearer, iso, json_response
from contexten.testing.sandbox.faults import Fault
from contexten.testing.sandbox.github import GitHubEmulator
from contexten.testing.specs import codegen_openapi

__all__ = ["CodegenEmulator"]

JSON = dict[str, Any]
_IDENTIFIER_RE = re.compile(r"\b([A-Z][A-Z0-9]{1,9}-\d+)\b")
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class CodegenEmulator(Emulator):
    """Codegen's agent API, in memory, with self-progressing runs."""

    platform = "codegen"

    def __init__(self, core: Core, github: GitHubEmulator) -> None:
        super().__init__(core)
        self.github = github
        self.reset()

    def reset(self) -> None:
        self.runs: dict[int, JSON] = {}
        self._due: dict[int, float] = {}

    def routes(self) -> list[Route]:
        """The Starlette routes, mounted under ``/codegen``."""
        base = "/v1/organizations/{org_id:int}"
        return [
            Route(f"{base}/agent/run", self.create, methods=["POST"]),
            Route(f"{base}/agent/runs", self.list, methods=["GET"]),
            Route(f"{base}/agent/run/ban", self.ban, methods=["POST"]),
            Route(f"{base}/agent/run/resume", self.resume, methods=["POST"]),
            Route(f"{base}/agent/run/{{run_id:int}}", self.get, methods=["GET"]),
        ]

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            return json_response(
                {"message": "Rate limit exceeded. Please try again later.", "status_code": 429},
                429,
                {"Retry-After": str(int(fault.retry_after))},
            )
        return json_response(
            {"message": "Internal Server Error", "status_code": fault.status}, fault.status
        )

    def _check(self, request: Request) -> Response | None:
        if bearer(request) is None and self.core.config.require_auth:
            return json_response({"detail": "Not authenticated"}, 401)
        if request.path_params["org_id"] != self.core.config.codegen_org_id:
            return json_response(
                {"message": "You do not have access to this organization.", "status_code": 403}, 403
            )
        return None

    async def _body(self, request: Request) -> tuple[JSON, Response | None]:
        """The request's JSON body, or the 422 Codegen answers when the description refuses
        the request (a missing or wrongly typed field, a body that is not JSON)."""
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        problems = codegen_openapi().check_request(
            request.method,
            request.url.path.removeprefix("/codegen"),
            query=dict(request.query_params),
            body=body,
            has_body=bool(raw),
        )
        if problems:
            detail = [{"loc": ["body"], "msg": p, "type": "value_error"} for p in problems]
            return {}, json_response({"detail": detail}, 422)
        return (body if isinstance(body, dict) else {}), None

    def public(self, run: JSON) -> JSON:
        """A run as the API returns it."""
        return {k: v for k, v in run.items() if not k.startswith("_")}

    async def create(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        body, refused = await self._body(request)
        if refused is not None:
            return refused
        run = self.start_run(body["prompt"], body.get("metadata") or {})
        return json_response(self.public(run))

    def start_run(self, prompt: str, metadata: JSON) -> JSON:
        """Create a run (also used by the control API)."""
        reserved = self.core.claim("codegen.run", metadata.get("contexten_idempotency_key"))
        rid = reserved if isinstance(reserved, int) and reserved not in self.runs else None
        rid = rid if rid is not None else self.core.next_id()
        run: JSON = {
            "id": rid,
            "organization_id": self.core.config.codegen_org_id,
            "status": "queued",
            "created_at": iso(),
            "web_url": f"https://codegen.com/agent/trace/{rid}",
            "result": None,
            "summary": None,
            "source_type": "API",
            "github_pull_requests": [],
            "metadata": metadata,
            "_prompt": prompt,
        }
        self.runs[rid] = run
        self._due[rid] = time.monotonic() + self.core.config.agent_run_start_after
        return run

    async def get(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        run = self.runs.get(request.path_params["run_id"])
        if run is None:
            return json_response({"message": "Agent run not found.", "status_code": 404}, 404)
        return json_response(self.public(run))

    async def list(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        skip = int(request.query_params.get("skip", 0))
        limit = int(request.query_params.get("limit", 100))
        runs = sorted(self.runs.values(), key=lambda r: r["id"], reverse=True)
        page = [self.public(r) for r in runs[skip : skip + limit]]
        return json_response(
            {
                "items": page,
                "total": len(runs),
                "page": skip // max(limit, 1) + 1,
                "size": limit,
                "pages": (len(runs) + limit - 1) // max(limit, 1),
            }
        )

    async def ban(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        body, refused = await self._body(request)
        if refused is not None:
            return refused
        run = self.runs.get(int(body["agent_run_id"]))
        if run is None:
            return json_response({"message": "Agent run not found.", "status_code": 404}, 404)
        if run["status"] not in _TERMINAL:
            self._set(run, "cancelled")
        return json_response({"message": "Agent run banned and stopped.", "status_code": 200})

    async def resume(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        body, refused = await self._body(request)
        if refused is not None:
            return refused
        run = self.runs.get(int(body["agent_run_id"]))
        if run is None:
            return json_response({"message": "Agent run not found.", "status_code": 404}, 404)
        run["_prompt"] += "\n" + str(body.get("prompt", ""))
        self._set(run, "running")
        self._due[run["id"]] = time.monotonic() + self.core.config.agent_run_duration
        return json_response(self.public(run))

    # -- progression ----------------------------------------------------------------------------

    def advance(self, *, force: bool = False) -> int:
        """Move every run whose time has come one status on (``force``: all of them, now).

        Returns how many runs changed.
        """
        now = time.monotonic()
        changed = 0
        for rid, due in list(self._due.items()):
            if not force and due > now:
                continue
            run = self.runs[rid]
            if run["status"] == "queued":
                self._set(run, "running")
                self._due[rid] = now + self.core.config.agent_run_duration
            elif run["status"] == "running":
                self._finish(run)
                self._due.pop(rid, None)
            else:
                self._due.pop(rid, None)
            changed += 1
        return changed

    def finish_all(self) -> None:
        """Run every unfinished run to its end now (tests, scripted demos)."""
        while self._due:
            self.advance(force=True)

    def _finish(self, run: JSON) -> None:
        prompt = str(run["_prompt"])
        if "[sandbox:fail]" in prompt or run["metadata"].get("sandbox_outcome") == "failed":
            run["result"] = "The agent could not complete the task: tests kept failing."
            self._set(run, "failed")
            return
        repo = run["metadata"].get("repo")
        if repo:
            identifier = run["metadata"].get("correlation_id") or _find_identifier(prompt)
            title_line = prompt.strip().splitlines()[0][:72]
            slug = re.sub(r"[^a-z0-9]+", "-", title_line.lower()).strip("-")[:40]
            branch = f"codegen-bot/{(identifier or str(run['id'])).lower()}-{slug}"
            title = (
                f"{identifier}: {title_line}"
                if identifier and identifier not in title_line
                else title_line
            )
            status, pr = self.github.create_pull(
                self.github.repo(repo),
                {
                    "title": title,
                    "head": branch,
                    "base": "main",
                    "body": f"Implements {identifier or 'the task'}.\n\n"
                    f"Agent run: {run['web_url']}",
                },
                author="codegen-sh[bot]",
            )
            if status == 201:
                run["github_pull_requests"] = [
                    {
                        "id": pr["id"],
                        "title": pr["title"],
                        "url": pr["html_url"],
                        "created_at": pr["created_at"],
                        "head_branch_name": branch,
                    }
                ]
        run["result"] = "Implemented the change and opened a pull request."
        run["summary"] = "Done."
        self._set(run, "completed")

    def _set(self, run: JSON, status: str) -> None:
        run["status"] = status
        if status in _TERMINAL:
            self._due.pop(run["id"], None)


def _find_identifier(text: str) -> str | None:
    match = _IDENTIFIER_RE.search(text)
    return match.group(1) if match else None
