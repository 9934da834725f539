"""The sandbox's GitHub REST API: issues and pull requests, comments, labels, reviewers,
statuses, check runs, merges; ``X-RateLimit-*`` headers; webhooks for every change.

Repositories spring into existence on first use. Objects look like GitHub's (ids, node ids,
urls, users, timestamps), trimmed to the fields that matter.

Requests are checked against GitHub's published OpenAPI description (see
:mod:`contexten.testing.specs`): an operation GitHub does not have answers 404, a body or
parameter with a wrong type or enum value answers 422 ``Invalid request``, as GitHub does.
Each token's rate budget refills at the start of every window.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contexten.integrations.idempotency import find_marker
from contexten.testing.sandbox.core import Core, Emulator, bearer, iso, json_response
from contexten.testing.sandbox.faults import Fault
from contexten.testing.specs import github_openapi, github_webhooks

__all__ = ["GitHubEmulator"]

JSON = dict[str, Any]
API = "https://api.github.com"
WEB = "https://github.com"


_DEFAULT_PER_PAGE = 30
_MAX_PER_PAGE = 100


def _paginate(items: list[Any], query: dict[str, str], url: str) -> tuple[list[Any], str] | str:
    """One page of ``items`` (``per_page``, default 30, at most 100; ``page`` from 1) and the
    ``Link`` header GitHub sends with it (``next``/``last`` unless on the last page,
    ``prev``/``first`` unless on the first); an error message for a malformed value."""
    try:
        per_page = int(query.get("per_page", _DEFAULT_PER_PAGE))
        page = int(query.get("page", 1))
    except ValueError:
        return "Invalid per_page or page: not an integer"
    per_page = min(max(per_page, 1), _MAX_PER_PAGE)
    page = max(page, 1)
    last = max(1, -(-len(items) // per_page))
    base = httpx.URL(url)

    def link(number: int, rel: str) -> str:
        target = base.copy_set_param("per_page", per_page).copy_set_param("page", number)
        return f'<{target}>; rel="{rel}"'

    links: list[str] = []
    if page > 1:
        links += [link(min(page - 1, last), "prev"), link(1, "first")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    return items[(page - 1) * per_page : page * per_page], ", ".join(links)


def _node_id(prefix: str, number: int) -> str:
    return f"{prefix}_kwDO{hashlib.sha1(str(number).encode()).hexdigest()[:12]}"


@dataclass(slots=True)
class Repo:
    """One repository's objects."""

    full_name: str
    id: int
    issues: dict[int, JSON] = field(default_factory=dict)  # issues and PRs share numbers
    comments: dict[int, JSON] = field(default_factory=dict)
    statuses: dict[str, list[JSON]] = field(default_factory=dict)
    check_runs: dict[int, JSON] = field(default_factory=dict)
    next_number: int = 1


class GitHubEmulator(Emulator):
    """GitHub REST, in memory."""

    platform = "github"

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.repos: dict[str, Repo] = {}
        self._budget: dict[str, tuple[int, int]] = {}  # token -> (window, requests left)

    def reset(self) -> None:
        self.repos.clear()
        self._budget.clear()

    # -- helpers -------------------------------------------------------------------------------

    def user(self, login: str | None = None) -> JSON:
        """A user object (the bot when ``login`` is None)."""
        login = login or self.core.config.github_bot_login
        bot = login.endswith("[bot]")
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:7], 16)
        return {
            "login": login,
            "id": uid,
            "node_id": _node_id("U", uid),
            "type": "Bot" if bot else "User",
            "html_url": f"{WEB}/{login}",
        }

    def repo(self, full_name: str) -> Repo:
        """The repository, created on first use."""
        if full_name not in self.repos:
            self.repos[full_name] = Repo(full_name, self.core.next_id())
        return self.repos[full_name]

    def repo_json(self, repo: Repo) -> JSON:
        owner, name = repo.full_name.split("/", 1)
        return {
            "id": repo.id,
            "node_id": _node_id("R", repo.id),
            "name": name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self.user(owner),
            "html_url": f"{WEB}/{repo.full_name}",
            "url": f"{API}/repos/{repo.full_name}",
            "default_branch": "main",
        }

    def _headers(self, token: str) -> dict[str, str]:
        limit = self.core.config.github_rate_limit
        remaining = max(self._left(token), 0)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Used": str(limit - remaining),
            "X-RateLimit-Reset": str(int(self.core.window_reset())),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Request-Id": f"SANDBOX:{self.core.next_id()}",
        }

    def _window(self) -> int:
        return int((self.core.now() - self.core.started) // self.core.config.rate_limit_window)

    def _left(self, token: str) -> int:
        """Requests ``token`` has left in the current window (a new window refills it)."""
        window, left = self._budget.get(token, (-1, 0))
        return left if window == self._window() else self.core.config.github_rate_limit

    def _error(self, status: int, message: str, token: str = "", **extra: Any) -> Response:
        body = {
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": str(status),
            **extra,
        }
        return json_response(body, status, self._headers(token) if token else None)

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit" and fault.secondary:
            return json_response(
                {
                    "message": "You have exceeded a secondary rate limit. Please wait a few "
                    "minutes before you try again.",
                    "documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
                },
                429,
                {"Retry-After": str(int(fault.retry_after))},
            )
        if fault.kind == "rate_limit":
            headers = {
                "X-RateLimit-Limit": str(self.core.config.github_rate_limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Resource": "core",
                "X-RateLimit-Reset": str(int(self.core.now() + fault.retry_after + 0.999)),
            }
            return json_response(
                {
                    "message": "API rate limit exceeded for installation.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits",
                },
                403,
                headers,
            )
        return json_response({"message": "Server Error"}, fault.status)

    def routes(self) -> list[Route]:
        """The Starlette routes, mounted under ``/github``."""
        return [
            Route("/{path:path}", self.dispatch, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
        ]

    # -- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        token = bearer(request)
        if token is None and self.core.config.require_auth:
            return self._error(401, "Requires authentication")
        token = token or "anonymous"
        left = self._left(token)
        if left <= 0:
            wait = max(self.core.window_reset() - self.core.now(), 1.0)
            return self.fault_response(Fault("rate_limit", retry_after=wait))
        self._budget[token] = (self._window(), left - 1)
        path = "/" + request.path_params["path"].strip("/")
        parts = path.strip("/").split("/")
        body: Any = {}
        raw = await request.body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return self._error(400, "Problems parsing JSON", token)
        query = dict(request.query_params)
        problems = github_openapi().check_request(
            request.method, path, query=query, body=body, has_body=bool(raw)
        )
        if problems and problems[0].startswith("github: no operation"):
            return self._error(404, "Not Found", token)
        if problems:
            return self._error(422, "Invalid request.\n\n" + "\n".join(problems), token)
        if not isinstance(body, dict):
            body = {}
        status, result = self._route(request.method, parts, body, query)
        if status >= 400:
            return self._error(status, str(result), token)
        if status == 204:
            return Response(status_code=204, headers=self._headers(token))
        headers = self._headers(token)
        if request.method == "GET" and isinstance(result, list):
            page = _paginate(result, query, str(request.url))
            if isinstance(page, str):
                return self._error(422, page, token)
            result, link = page
            if link:
                headers["Link"] = link
        # Completed to the response schema: the fields GitHub's description requires.
        answer = github_openapi().complete_response(request.method, path, status, result)
        return json_response(answer, status, headers)

    def _route(
        self, method: str, parts: list[str], body: JSON, query: dict[str, str]
    ) -> tuple[int, Any]:
        if len(parts) < 4 or parts[0] != "repos":
            return 404, "Not Found"
        repo = self.repo(f"{parts[1]}/{parts[2]}")
        rest = parts[3:]
        key = (method, rest[0], len(rest))
        table: dict[tuple[str, str, int], Callable[[], tuple[int, Any]]] = {
            ("POST", "issues", 3): lambda: (
                self.create_comment(repo, int(rest[1]), body)
                if rest[2] == "comments"
                else self.add_labels(repo, int(rest[1]), body)
            ),
            ("GET", "issues", 3): lambda: self.list_comments(repo, int(rest[1]), query),
            ("PATCH", "issues", 2): lambda: self.patch_issue(repo, int(rest[1]), body),
            ("DELETE", "issues", 4): lambda: self.remove_label(repo, int(rest[1]), rest[3]),
            ("POST", "pulls", 1): lambda: self.create_pull(repo, body),
            ("GET", "pulls", 1): lambda: (200, self.list_pulls(repo, query)),
            ("GET", "pulls", 2): lambda: self.get_pull(repo, int(rest[1])),
            ("PATCH", "pulls", 2): lambda: self.patch_issue(repo, int(rest[1]), body),
            ("GET", "pulls", 3): lambda: self.pull_files(repo, int(rest[1])),
            ("PUT", "pulls", 3): lambda: self.merge(repo, int(rest[1]), body),
            ("POST", "pulls", 3): lambda: self.reviewers(repo, int(rest[1]), body, add=True),
            ("DELETE", "pulls", 3): lambda: self.reviewers(repo, int(rest[1]), body, add=False),
            ("POST", "statuses", 2): lambda: self.create_status(repo, rest[1], body),
            ("POST", "check-runs", 1): lambda: self.create_check(repo, body),
            ("PATCH", "check-runs", 2): lambda: self.update_check(repo, int(rest[1]), body),
            ("GET", "commits", 3): lambda: (200, self.list_checks(repo, rest[1], query)),
        }
        if rest[0] == "issues" and rest[1:2] == ["comments"] and len(rest) == 3:
            comment_id = int(rest[2])
            if method == "GET":
                return self.get_comment(repo, comment_id)
            if method == "PATCH":
                return self.edit_comment(repo, comment_id, body)
            if method == "DELETE":
                return self.delete_comment(repo, comment_id)
        handler = table.get(key)
        return handler() if handler else (404, "Not Found")

    # -- issues, comments, labels --------------------------------------------------------------

    def create_issue(
        self,
        full_name: str,
        title: str,
        body: str = "",
        *,
        author: str = "octocat",
        labels: list[str] | None = None,
    ) -> JSON:
        """Create an issue as a human (control API and tests); sends ``issues.opened``."""
        repo = self.repo(full_name)
        issue = self._new_issue(repo, title, body, author)
        issue["labels"] = [self._label(n) for n in labels or []]
        self._hook("issues", "opened", repo, issue=issue, sender=author)
        return issue

    def _new_issue(self, repo: Repo, title: str, body: str, author: str | None) -> JSON:
        reserved = self.core.claim(f"github.number:{repo.full_name}", find_marker(body))
        if isinstance(reserved, int) and reserved not in repo.issues:
            number = reserved
            repo.next_number = max(repo.next_number, number + 1)
        else:
            number, repo.next_number = repo.next_number, repo.next_number + 1
        iid = self.core.next_id()
        issue = {
            "id": iid,
            "node_id": _node_id("I", iid),
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "locked": False,
            "labels": [],
            "assignees": [],
            "user": self.user(author),
            "comments": 0,
            "created_at": iso(),
            "updated_at": iso(),
            "closed_at": None,
            "url": f"{API}/repos/{repo.full_name}/issues/{number}",
            "html_url": f"{WEB}/{repo.full_name}/issues/{number}",
            "repository_url": f"{API}/repos/{repo.full_name}",
        }
        repo.issues[number] = issue
        return issue

    def _issue(self, repo: Repo, number: int) -> JSON | None:
        return repo.issues.get(number)

    def _label(self, name: str) -> JSON:
        lid = int(hashlib.sha1(name.encode()).hexdigest()[:7], 16)
        return {
            "id": lid,
            "node_id": _node_id("LA", lid),
            "name": name,
            "color": hashlib.sha1(name.encode()).hexdigest()[:6],
            "default": False,
            "description": None,
        }

    def create_comment(
        self, repo: Repo, number: int, body: JSON, author: str | None = None
    ) -> tuple[int, Any]:
        """``POST /repos/{repo}/issues/{number}/comments``."""
        issue = self._issue(repo, number)
        if issue is None:
            return 404, "Not Found"
        if not body.get("body"):
            return 422, "Validation Failed"
        cid = self.core.next_id()
        comment = {
            "id": cid,
            "node_id": _node_id("IC", cid),
            "body": body["body"],
            "user": self.user(author),
            "created_at": iso(),
            "updated_at": iso(),
            "author_association": "NONE" if author is None else "MEMBER",
            "issue_url": issue["url"],
            "url": f"{API}/repos/{repo.full_name}/issues/comments/{cid}",
            "html_url": f"{issue['html_url']}#issuecomment-{cid}",
        }
        repo.comments[cid] = comment
        issue["comments"] += 1
        self._hook("issue_comment", "created", repo, issue=issue, comment=comment, sender=author)
        return 201, comment

    def list_comments(
        self, repo: Repo, number: int, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """``GET /repos/{repo}/issues/{number}/comments``: oldest first; ``since`` keeps those
        updated at or after a time (pages are cut by the dispatcher)."""
        url = f"{API}/repos/{repo.full_name}/issues/{number}"
        comments = [c for c in repo.comments.values() if c["issue_url"] == url]
        since = (query or {}).get("since")
        if since:
            try:
                floor = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                return 422, f"Invalid since: {since!r} is not an ISO 8601 timestamp"
            if floor.tzinfo is None:
                floor = floor.replace(tzinfo=UTC)
            comments = [
                c
                for c in comments
                if datetime.fromisoformat(c["updated_at"].replace("Z", "+00:00")) >= floor
            ]
        return 200, comments

    def get_comment(self, repo: Repo, comment_id: int) -> tuple[int, Any]:
        comment = repo.comments.get(comment_id)
        return (200, comment) if comment else (404, "Not Found")

    def edit_comment(self, repo: Repo, comment_id: int, body: JSON) -> tuple[int, Any]:
        comment = repo.comments.get(comment_id)
        if comment is None:
            return 404, "Not Found"
        previous = comment["body"]
        comment.update(body=body.get("body", previous), updated_at=iso())
        issue = repo.issues[int(comment["issue_url"].rsplit("/", 1)[-1])]
        self._hook(
            "issue_comment",
            "edited",
            repo,
            issue=issue,
            comment=comment,
            changes={"body": {"from": previous}},
        )
        return 200, comment

    def delete_comment(self, repo: Repo, comment_id: int) -> tuple[int, Any]:
        comment = repo.comments.pop(comment_id, None)
        if comment is None:
            return 404, "Not Found"
        issue = repo.issues[int(comment["issue_url"].rsplit("/", 1)[-1])]
        issue["comments"] -= 1
        self._hook("issue_comment", "deleted", repo, issue=issue, comment=comment)
        return 204, None

    def add_labels(self, repo: Repo, number: int, body: JSON) -> tuple[int, Any]:
        issue = self._issue(repo, number)
        if issue is None:
            return 404, "Not Found"
        names = body.get("labels") if isinstance(body, dict) else body
        have = {label["name"] for label in issue["labels"]}
        for name in names or []:
            if name not in have:
                issue["labels"].append(self._label(name))
                have.add(name)
                self._hook(
                    self._kind(issue),
                    "labeled",
                    repo,
                    label=self._label(name),
                    **self._obj(issue),
                )
        return 200, issue["labels"]

    def remove_label(self, repo: Repo, number: int, name: str) -> tuple[int, Any]:
        from urllib.parse import unquote

        name = unquote(name)
        issue = self._issue(repo, number)
        if issue is None or name not in {label["name"] for label in issue["labels"]}:
            return 404, "Label does not exist"
        issue["labels"] = [label for label in issue["labels"] if label["name"] != name]
        self._hook(
            self._kind(issue),
            "unlabeled",
            repo,
            label=self._label(name),
            **self._obj(issue),
        )
        return 200, issue["labels"]

    def patch_issue(self, repo: Repo, number: int, body: JSON) -> tuple[int, Any]:
        issue = self._issue(repo, number)
        if issue is None:
            return 404, "Not Found"
        if body.get("state") not in (None, "open", "closed"):
            return 422, "Validation Failed"
        old_state = issue["state"]
        changes = {k: {"from": issue.get(k)} for k in ("title", "body") if k in body}
        for k in ("title", "body", "state"):
            if k in body:
                issue[k] = body[k]
        if "base" in body and "base" in issue:
            issue["base"]["ref"] = body["base"]
        issue["updated_at"] = iso()
        kind = self._kind(issue)
        if issue["state"] != old_state:
            issue["closed_at"] = iso() if issue["state"] == "closed" else None
            self._hook(
                kind,
                "closed" if issue["state"] == "closed" else "reopened",
                repo,
                **self._obj(issue),
            )
        elif changes:
            self._hook(kind, "edited", repo, changes=changes, **self._obj(issue))
        return 200, issue

    def _obj(self, issue: JSON) -> JSON:
        return {self._kind(issue): issue}

    @staticmethod
    def _kind(issue: JSON) -> str:
        return "pull_request" if "head" in issue else "issue"

    # -- pull requests --------------------------------------------------------------------------

    def create_pull(self, repo: Repo, body: JSON, author: str | None = None) -> tuple[int, Any]:
        """``POST /repos/{repo}/pulls``."""
        missing = [k for k in ("title", "head", "base") if not body.get(k)]
        if missing:
            return 422, f"Validation Failed: missing {', '.join(missing)}"
        head = str(body["head"]).split(":")[-1]
        for pr in repo.issues.values():
            if pr.get("head", {}).get("ref") == head and pr["state"] == "open":
                return 422, f"Validation Failed (A pull request already exists for {head}.)"
        pr = self._new_issue(repo, body["title"], body.get("body") or "", author)
        sha = hashlib.sha1(f"{repo.full_name}:{head}:{pr['id']}".encode()).hexdigest()
        owner = repo.full_name.split("/")[0]
        pr.update(
            draft=bool(body.get("draft", False)),
            merged=False,
            merged_at=None,
            merge_commit_sha=None,
            mergeable=True,
            requested_reviewers=[],
            requested_teams=[],
            head={"ref": head, "sha": sha, "label": f"{owner}:{head}"},
            base={"ref": body["base"], "sha": "0" * 40, "label": f"{owner}:{body['base']}"},
            url=f"{API}/repos/{repo.full_name}/pulls/{pr['number']}",
            html_url=f"{WEB}/{repo.full_name}/pull/{pr['number']}",
            issue_url=f"{API}/repos/{repo.full_name}/issues/{pr['number']}",
            node_id=_node_id("PR", pr["id"]),
        )
        self._hook(
            "pull_request", "opened", repo, pull_request=pr, number=pr["number"], sender=author
        )
        return 201, pr

    def list_pulls(self, repo: Repo, query: dict[str, str]) -> list[JSON]:
        """``GET /repos/{repo}/pulls``: ``state``, ``head``; ``sort=created`` (the only order
        kept) newest first unless ``direction=asc``, as GitHub's default is."""
        state = query.get("state", "open")
        head = query.get("head", "").split(":")[-1]
        pulls = [
            pr
            for pr in repo.issues.values()
            if "head" in pr
            and (state == "all" or pr["state"] == state)
            and (not head or pr["head"]["ref"] == head)
        ]
        pulls.sort(key=lambda pr: int(pr["number"]), reverse=query.get("direction") != "asc")
        return pulls

    def get_pull(self, repo: Repo, number: int) -> tuple[int, Any]:
        pr = repo.issues.get(number)
        return (200, pr) if pr and "head" in pr else (404, "Not Found")

    def pull_files(self, repo: Repo, number: int) -> tuple[int, Any]:
        status, pr = self.get_pull(repo, number)
        if status != 200:
            return status, pr
        return 200, [
            {
                "sha": pr["head"]["sha"],
                "filename": f"src/change_{number}.py",
                "status": "modified",
                "additions": 12,
                "deletions": 3,
                "changes": 15,
            }
        ]

    def merge(self, repo: Repo, number: int, body: JSON) -> tuple[int, Any]:
        status, pr = self.get_pull(repo, number)
        if status != 200:
            return status, pr
        if pr["merged"]:
            return 405, "Pull Request is not mergeable"
        if pr["state"] != "open":
            return 422, "Pull Request is not open"
        if body.get("sha") and body["sha"] != pr["head"]["sha"]:
            return 409, "Head branch was modified. Review and try the merge again."
        sha = hashlib.sha1(f"merge:{pr['id']}".encode()).hexdigest()
        pr.update(
            merged=True, merged_at=iso(), merge_commit_sha=sha, state="closed", closed_at=iso()
        )
        self._hook("pull_request", "closed", repo, pull_request=pr, number=number)
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def reviewers(self, repo: Repo, number: int, body: JSON, *, add: bool) -> tuple[int, Any]:
        status, pr = self.get_pull(repo, number)
        if status != 200:
            return status, pr
        logins = list(body.get("reviewers") or [])
        current = {u["login"] for u in pr["requested_reviewers"]}
        if add:
            for login in logins:
                if login not in current:
                    pr["requested_reviewers"].append(self.user(login))
                    self._hook(
                        "pull_request",
                        "review_requested",
                        repo,
                        pull_request=pr,
                        requested_reviewer=self.user(login),
                    )
            return 201, pr
        pr["requested_reviewers"] = [
            u for u in pr["requested_reviewers"] if u["login"] not in logins
        ]
        return 200, pr

    # -- statuses and checks --------------------------------------------------------------------

    def create_status(self, repo: Repo, sha: str, body: JSON) -> tuple[int, Any]:
        if body.get("state") not in ("error", "failure", "pending", "success"):
            return 422, "Validation Failed"
        sid = self.core.next_id()
        status = {
            "id": sid,
            "node_id": _node_id("SC", sid),
            "state": body["state"],
            "context": body.get("context", "default"),
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "creator": self.user(),
            "created_at": iso(),
            "updated_at": iso(),
            "url": f"{API}/repos/{repo.full_name}/statuses/{sha}",
        }
        repo.statuses.setdefault(sha, []).append(status)
        return 201, status

    def create_check(self, repo: Repo, body: JSON) -> tuple[int, Any]:
        if not body.get("name") or not body.get("head_sha"):
            return 422, "Validation Failed"
        cid = self.core.next_id()
        check = {
            "id": cid,
            "node_id": _node_id("CR", cid),
            "name": body["name"],
            "head_sha": body["head_sha"],
            "external_id": body.get("external_id", ""),
            "status": body.get("status", "queued"),
            "conclusion": body.get("conclusion"),
            "output": body.get("output") or {},
            "started_at": iso(),
            "completed_at": None,
            "url": f"{API}/repos/{repo.full_name}/check-runs/{cid}",
            "html_url": f"{WEB}/{repo.full_name}/runs/{cid}",
        }
        repo.check_runs[cid] = check
        return 201, check

    def update_check(self, repo: Repo, check_id: int, body: JSON) -> tuple[int, Any]:
        check = repo.check_runs.get(check_id)
        if check is None:
            return 404, "Not Found"
        check.update(
            {
                k: v
                for k, v in body.items()
                if k in ("status", "conclusion", "output", "name", "details_url")
            }
        )
        if check.get("conclusion"):
            check.update(status="completed", completed_at=iso())
        return 200, check

    def list_checks(self, repo: Repo, sha: str, query: dict[str, str]) -> JSON:
        runs = [
            c
            for c in repo.check_runs.values()
            if c["head_sha"] == sha
            and (not query.get("check_name") or c["name"] == query["check_name"])
        ]
        return {"total_count": len(runs), "check_runs": runs}

    # -- webhooks --------------------------------------------------------------------------------

    def _hook(
        self, event: str, action: str, repo: Repo, *, sender: str | None = None, **objects: Any
    ) -> None:
        if sender is None and not self.core.config.webhooks_for_api_calls:
            return
        if event == "pull_request" and "pull_request" in objects:
            objects.setdefault("number", objects["pull_request"]["number"])  # GitHub's schema
        payload = {
            "action": action,
            **objects,
            "repository": self.repo_json(repo),
            "sender": self.user(sender),
        }
        name = "issues" if event == "issue" else event
        # Completed to the shape GitHub's webhook schema describes (required fields present).
        self.core.webhooks.github(name, github_webhooks().complete(name, payload))
