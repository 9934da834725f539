"""GitHub REST client: comments, labels, pull requests, reviewers, statuses and check runs.

Responses are GitHub's JSON, returned as it came (dicts and lists), so what a workflow records
is what GitHub said. Rate limits are learned from ``X-RateLimit-*`` on every response, per
resource (``core``, ``search``...); a 403/429 with ``X-RateLimit-Remaining: 0`` waits for the
reset, one with ``Retry-After`` (a secondary limit) blocks every call of this credential for
that long. Creates that GitHub cannot deduplicate (comments, pull requests, check runs) carry
the idempotency key with the object and look for it first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from contexten.exceptions import PlatformError, PlatformNotFound, PlatformRequestError
from contexten.integrations.client import PlatformClient
from contexten.integrations.errors import error_for_status
from contexten.integrations.http import PlatformAdapter, parse_retry_after
from contexten.integrations.idempotency import find_marker, platform_key, with_marker
from contexten.resilience.rate_limit import ALL_BUCKETS, RateLimitUpdate

__all__ = ["GitHubAdapter", "GitHubClient"]

JSON = dict[str, Any]

_SECONDARY_DEFAULT_WAIT = 60.0


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class GitHubAdapter(PlatformAdapter):
    """GitHub's auth, rate-limit headers and error shapes."""

    platform = "github"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def bucket(self, method: str, url: httpx.URL) -> str:
        return "search" if "/search/" in url.path else "core"

    def rate_limit_updates(self, response: httpx.Response) -> list[RateLimitUpdate]:
        headers = response.headers
        updates: list[RateLimitUpdate] = []
        remaining = _int(headers.get("x-ratelimit-remaining"))
        reset = _int(headers.get("x-ratelimit-reset"))
        if remaining is not None:
            bucket = headers.get("x-ratelimit-resource") or self.bucket(
                response.request.method, response.request.url
            )
            updates.append(
                RateLimitUpdate(
                    bucket=bucket,
                    remaining=remaining,
                    limit=_int(headers.get("x-ratelimit-limit")),
                    reset_after=max(reset - self.now(), 0.0) if reset is not None else None,
                )
            )
        if response.status_code in (403, 429) and remaining != 0:
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None or self._is_secondary(response):
                # Secondary limits apply to the credential as a whole.
                wait = retry_after if retry_after is not None else _SECONDARY_DEFAULT_WAIT
                updates.append(RateLimitUpdate(bucket=ALL_BUCKETS, retry_after=wait))
        return updates

    def error_for(self, response: httpx.Response) -> PlatformError | None:
        status = response.status_code
        if status < 400:
            return None
        message = self.error_message(response)
        headers = response.headers
        if status in (403, 429):
            if headers.get("x-ratelimit-remaining") == "0":
                reset = _int(headers.get("x-ratelimit-reset"))
                wait = max(reset - self.now(), 1.0) if reset is not None else 60.0
                return error_for_status(status, message, platform="github", retry_after=wait)
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None or self._is_secondary(response):
                wait = retry_after if retry_after is not None else _SECONDARY_DEFAULT_WAIT
                return error_for_status(status, message, platform="github", retry_after=wait)
        return error_for_status(status, message, platform="github")

    def error_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        if not isinstance(body, dict):
            return f"HTTP {response.status_code}"
        message = str(body.get("message") or f"HTTP {response.status_code}")
        details = [
            e.get("message") or f"{e.get('resource')}.{e.get('field')} {e.get('code')}"
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        if details:
            message += " (" + "; ".join(str(d) for d in details) + ")"
        return f"HTTP {response.status_code}: {message}"

    @staticmethod
    def _is_secondary(response: httpx.Response) -> bool:
        return "secondary rate limit" in response.text.lower()


class GitHubClient(PlatformClient):
    """The GitHub REST API for one token (``CONTEXTEN_GITHUB_TOKEN``).

    ``repo`` arguments are ``"owner/name"``. Every method returns GitHub's JSON.
    """

    platform: ClassVar[str] = "github"
    token_env: ClassVar[str] = "CONTEXTEN_GITHUB_TOKEN"
    default_base_url: ClassVar[str] = "https://api.github.com"
    sandbox_path: ClassVar[str] = "/github"

    def _adapter(self) -> PlatformAdapter:
        return GitHubAdapter()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def paginate(
        self, path: str, params: dict[str, Any] | None = None, *, max_pages: int | None = None
    ) -> list[Any]:
        """Every item of a paginated list, following ``Link: rel="next"``."""
        items: list[Any] = []
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **(params or {})}
        pages = 0
        while url is not None and (max_pages is None or pages < max_pages):
            response = await self.http.request("GET", url, params=query)
            items.extend(response.json())
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries its own query
            pages += 1
        return items

    # -- issue and pull request comments -------------------------------------------------------

    async def create_issue_comment(
        self, repo: str, number: int, body: str, *, idempotency_key: str | None = None
    ) -> JSON:
        """Comment on an issue or pull request (once per idempotency key)."""
        path = f"/repos/{repo}/issues/{number}/comments"

        async def lookup() -> JSON | None:
            assert idempotency_key is not None
            return await self._find_marked(path, idempotency_key)

        async def create() -> JSON:
            result: JSON = await self._json(
                "POST", path, json={"body": with_marker(body, idempotency_key)}
            )
            return result

        return await self.create_once(
            f"github:comment:{repo}#{number}", idempotency_key, lookup, create
        )

    async def get_issue_comment(self, repo: str, comment_id: int) -> JSON:
        """One issue comment."""
        result: JSON = await self._json("GET", f"/repos/{repo}/issues/comments/{comment_id}")
        return result

    async def update_issue_comment(self, repo: str, comment_id: int, body: str) -> JSON:
        """Replace a comment's body (the idempotency marker, if any, is kept)."""
        current = await self.get_issue_comment(repo, comment_id)
        result: JSON = await self._json(
            "PATCH",
            f"/repos/{repo}/issues/comments/{comment_id}",
            json={"body": with_marker(body, find_marker(current.get("body")))},
        )
        return result

    async def delete_issue_comment(
        self, repo: str, comment_id: int, *, missing_ok: bool = True
    ) -> None:
        """Delete a comment; one already gone is fine unless ``missing_ok`` is false."""
        try:
            await self._json("DELETE", f"/repos/{repo}/issues/comments/{comment_id}")
        except PlatformNotFound:
            if not missing_ok:
                raise

    async def _find_marked(
        self, path: str, key: str, params: dict[str, Any] | None = None
    ) -> JSON | None:
        """The newest item of an oldest-first list whose body carries ``key``'s marker.

        An earlier attempt's copy is among the newest items, however long the list is: the
        pages are read from the last (``Link: rel="last"``) back to the first.
        """
        async for page in self._pages_newest_first(path, params):
            for item in page:
                if isinstance(item, dict) and find_marker(item.get("body")) == platform_key(key):
                    return item
        return None

    async def _find_marked_newest_first(
        self, path: str, key: str, params: dict[str, Any] | None = None
    ) -> JSON | None:
        """The first item whose body carries ``key``'s marker, in a list the API already
        sorts newest first (every page, following ``Link: rel="next"``)."""
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **(params or {})}
        while url is not None:
            response = await self.http.request("GET", url, params=query)
            for item in response.json():
                if isinstance(item, dict) and find_marker(item.get("body")) == platform_key(key):
                    return dict(item)
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries its own query
        return None

    async def _pages_newest_first(
        self, path: str, params: dict[str, Any] | None
    ) -> AsyncIterator[list[Any]]:
        """The pages of an oldest-first list, last page first, each page newest item first."""
        first = await self.http.request("GET", path, params={"per_page": 100, **(params or {})})
        last_link = first.links.get("last", {}).get("url")
        if last_link is not None:
            last = httpx.URL(last_link)
            # Items only ever move to earlier pages (deletions), never later: walking back
            # from the last page cannot skip one that was there when the walk began.
            for number in range(int(last.params.get("page", "1")), 1, -1):
                response = await self.http.request("GET", str(last.copy_set_param("page", number)))
                yield list(reversed(response.json()))
        yield list(reversed(first.json()))

    # -- labels ---------------------------------------------------------------------------------

    async def add_labels(self, repo: str, number: int, labels: list[str]) -> list[JSON]:
        """Add labels to an issue or pull request; returns all its labels."""
        result: list[JSON] = await self._json(
            "POST", f"/repos/{repo}/issues/{number}/labels", json={"labels": labels}
        )
        return result

    async def remove_label(
        self, repo: str, number: int, label: str, *, missing_ok: bool = True
    ) -> list[JSON]:
        """Remove one label; returns the labels left. A label not there is fine by default."""
        try:
            result: list[JSON] = await self._json(
                "DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}"
            )
        except PlatformNotFound:
            if not missing_ok:
                raise
            return []
        return result

    # -- issues and pull requests ---------------------------------------------------------------

    async def set_issue_state(self, repo: str, number: int, state: str) -> JSON:
        """Close (``"closed"``) or reopen (``"open"``) an issue or pull request."""
        result: JSON = await self._json(
            "PATCH", f"/repos/{repo}/issues/{number}", json={"state": state}
        )
        return result

    async def create_pull_request(
        self,
        repo: str,
        *,
        title: str,
        head: str,
        base: str,
        body: str = "",
        draft: bool = False,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Open a pull request (once per idempotency key: the key is marked in its body)."""
        owner = repo.split("/", 1)[0]
        head_filter = head if ":" in head else f"{owner}:{head}"
        payload = {
            "title": title,
            "head": head,
            "base": base,
            "body": with_marker(body, idempotency_key),
            "draft": draft,
        }

        async def lookup() -> JSON | None:
            assert idempotency_key is not None
            return await self._find_marked_newest_first(
                f"/repos/{repo}/pulls",
                idempotency_key,
                {"head": head_filter, "state": "all", "sort": "created", "direction": "desc"},
            )

        async def create() -> JSON:
            result: JSON = await self._json("POST", f"/repos/{repo}/pulls", json=payload)
            return result

        return await self.create_once(f"github:pull:{repo}", idempotency_key, lookup, create)

    async def get_pull_request(self, repo: str, number: int) -> JSON:
        """One pull request."""
        result: JSON = await self._json("GET", f"/repos/{repo}/pulls/{number}")
        return result

    async def list_pull_request_files(self, repo: str, number: int) -> list[JSON]:
        """Every file a pull request changes (all pages)."""
        return await self.paginate(f"/repos/{repo}/pulls/{number}/files")

    async def update_pull_request(self, repo: str, number: int, **fields: Any) -> JSON:
        """Change a pull request's title, body, state or base."""
        result: JSON = await self._json("PATCH", f"/repos/{repo}/pulls/{number}", json=fields)
        return result

    async def merge_pull_request(
        self, repo: str, number: int, *, merge_method: str = "squash", sha: str | None = None
    ) -> JSON:
        """Merge a pull request (``sha`` guards against merging something newer)."""
        payload: JSON = {"merge_method": merge_method}
        if sha:
            payload["sha"] = sha
        result: JSON = await self._json("PUT", f"/repos/{repo}/pulls/{number}/merge", json=payload)
        return result

    async def request_reviewers(
        self,
        repo: str,
        number: int,
        reviewers: list[str] | None = None,
        team_reviewers: list[str] | None = None,
    ) -> JSON:
        """Request reviews; returns the pull request."""
        result: JSON = await self._json(
            "POST",
            f"/repos/{repo}/pulls/{number}/requested_reviewers",
            json={"reviewers": reviewers or [], "team_reviewers": team_reviewers or []},
            replay_safe=True,
        )
        return result

    async def remove_requested_reviewers(
        self,
        repo: str,
        number: int,
        reviewers: list[str] | None = None,
        team_reviewers: list[str] | None = None,
    ) -> JSON:
        """Withdraw review requests; returns the pull request."""
        result: JSON = await self._json(
            "DELETE",
            f"/repos/{repo}/pulls/{number}/requested_reviewers",
            json={"reviewers": reviewers or [], "team_reviewers": team_reviewers or []},
        )
        return result

    # -- commit statuses and check runs ---------------------------------------------------------

    async def create_commit_status(
        self,
        repo: str,
        sha: str,
        state: str,
        *,
        context: str = "contexten",
        description: str | None = None,
        target_url: str | None = None,
    ) -> JSON:
        """Set a commit status (the latest per ``context`` wins, so repeating is harmless)."""
        payload: JSON = {"state": state, "context": context}
        if description is not None:
            payload["description"] = description[:140]
        if target_url is not None:
            payload["target_url"] = target_url
        result: JSON = await self._json(
            "POST", f"/repos/{repo}/statuses/{sha}", json=payload, replay_safe=True
        )
        return result

    async def create_check_run(
        self,
        repo: str,
        *,
        name: str,
        head_sha: str,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> JSON:
        """Create a check run; the idempotency key is its ``external_id``, looked up first."""
        if idempotency_key is not None:
            fields["external_id"] = idempotency_key

        async def lookup() -> JSON | None:
            found = await self._json(
                "GET",
                f"/repos/{repo}/commits/{head_sha}/check-runs",
                params={"check_name": name, "per_page": 100},
            )
            for run in (found or {}).get("check_runs", []):
                if run.get("external_id") == idempotency_key:
                    return dict(run)
            return None

        async def create() -> JSON:
            result: JSON = await self._json(
                "POST",
                f"/repos/{repo}/check-runs",
                json={"name": name, "head_sha": head_sha, **fields},
            )
            return result

        return await self.create_once(f"github:check:{repo}", idempotency_key, lookup, create)

    async def update_check_run(self, repo: str, check_run_id: int, **fields: Any) -> JSON:
        """Update a check run (status, conclusion, output...)."""
        result: JSON = await self._json(
            "PATCH", f"/repos/{repo}/check-runs/{check_run_id}", json=fields
        )
        return result

    async def ensure_pull_request_closed(self, repo: str, number: int) -> JSON:
        """Close a pull request unless it is already closed or merged (a compensation)."""
        current = await self.get_pull_request(repo, number)
        if current.get("state") == "closed":
            return current
        try:
            return await self.update_pull_request(repo, number, state="closed")
        except PlatformRequestError:
            latest = await self.get_pull_request(repo, number)
            if latest.get("state") == "closed":
                return latest
            raise
