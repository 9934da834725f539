"""Linear GraphQL client: issues, comments, workflow states and labels.

Linear reports its budget on every response (``X-RateLimit-Requests-*`` and
``X-RateLimit-Complexity-*``, resets in epoch milliseconds) and refuses an overspending call
with a GraphQL error whose ``extensions.code`` is ``RATELIMITED``; both feed the adaptive
limiter. GraphQL errors arrive with HTTP 200 or 400; the adapter turns them into the right
Contexten error (not found, invalid input, rate limited, unavailable).

Creates are idempotent through Linear's client-chosen ids: an idempotency key becomes the new
object's UUID, so a retry finds the object the first attempt made (or Linear refuses the
duplicate id, and the client fetches it).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import httpx

from contexten.cache.memory import MemoryCache
from contexten.cache.multilevel import MultiLevelCache
from contexten.exceptions import (
    PlatformError,
    PlatformNotFound,
    PlatformRequestError,
    PlatformUnavailable,
)
from contexten.integrations.client import PlatformClient
from contexten.integrations.errors import error_for_status
from contexten.integrations.http import PlatformAdapter
from contexten.integrations.idempotency import id_for_key
from contexten.resilience.rate_limit import RateLimitUpdate

__all__ = ["LinearAdapter", "LinearClient"]

JSON = dict[str, Any]

ISSUE_FIELDS = """
  id identifier title description url priority archivedAt createdAt updatedAt
  state { id name type }
  team { id key name }
  assignee { id name email }
  labels { nodes { id name } }
"""
COMMENT_FIELDS = "id body url createdAt issue { id identifier } user { id name }"

_Q_ISSUE = f"query Issue($id: String!) {{ issue(id: $id) {{ {ISSUE_FIELDS} }} }}"
_M_ISSUE_CREATE = (
    "mutation IssueCreate($input: IssueCreateInput!) {"
    f" issueCreate(input: $input) {{ success issue {{ {ISSUE_FIELDS} }} }} }}"
)
_M_ISSUE_UPDATE = (
    "mutation IssueUpdate($id: String!, $input: IssueUpdateInput!) {"
    f" issueUpdate(id: $id, input: $input) {{ success issue {{ {ISSUE_FIELDS} }} }} }}"
)
_M_ISSUE_ARCHIVE = "mutation IssueArchive($id: String!) { issueArchive(id: $id) { success } }"
_M_ISSUE_UNARCHIVE = "mutation IssueUnarchive($id: String!) { issueUnarchive(id: $id) { success } }"
_Q_COMMENT = f"query Comment($id: String!) {{ comment(id: $id) {{ {COMMENT_FIELDS} }} }}"
_M_COMMENT_CREATE = (
    "mutation CommentCreate($input: CommentCreateInput!) {"
    f" commentCreate(input: $input) {{ success comment {{ {COMMENT_FIELDS} }} }} }}"
)
_M_COMMENT_DELETE = "mutation CommentDelete($id: String!) { commentDelete(id: $id) { success } }"
_STATES_KEY = "linear:workflow_states:"
_LABELS_KEY = "linear:issue_labels"

_Q_STATES = (
    "query WorkflowStates($teamId: ID!) { workflowStates(first: 100,"
    " filter: { team: { id: { eq: $teamId } } }) { nodes { id name type position } } }"
)
_Q_LABELS = "query IssueLabels { issueLabels(first: 250) { nodes { id name team { id } } } }"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class LinearAdapter(PlatformAdapter):
    """Linear's auth, rate-limit headers and GraphQL error shapes."""

    platform = "linear"

    def auth_headers(self, token: str | None) -> dict[str, str]:
        # Personal API keys go as they are; OAuth tokens are given with their "Bearer ".
        return {"Authorization": token} if token else {}

    def bucket(self, method: str, url: httpx.URL) -> str:
        return "requests"

    def _reset_after(self, value: str | None) -> float | None:
        millis = _int(value)
        return max(millis / 1000 - self.now(), 0.0) if millis is not None else None

    def rate_limit_updates(self, response: httpx.Response) -> list[RateLimitUpdate]:
        h = response.headers
        updates: list[RateLimitUpdate] = []
        remaining = _int(h.get("x-ratelimit-requests-remaining"))
        if remaining is not None:
            updates.append(
                RateLimitUpdate(
                    bucket="requests",
                    remaining=remaining,
                    limit=_int(h.get("x-ratelimit-requests-limit")),
                    reset_after=self._reset_after(h.get("x-ratelimit-requests-reset")),
                )
            )
        complexity_left = _int(h.get("x-ratelimit-complexity-remaining"))
        last_cost = _int(h.get("x-complexity")) or 1
        if complexity_left is not None and complexity_left < last_cost:
            # Another query like the last one would be refused: hold calls until the refill.
            wait = self._reset_after(h.get("x-ratelimit-complexity-reset"))
            updates.append(RateLimitUpdate(bucket="requests", retry_after=wait or 1.0))
        if self._rate_limited(response):
            wait = self._reset_after(h.get("x-ratelimit-requests-reset"))
            updates.append(RateLimitUpdate(bucket="requests", retry_after=wait or 1.0))
        return updates

    @staticmethod
    def _errors(response: httpx.Response) -> list[JSON]:
        try:
            body = response.json()
        except ValueError:
            return []
        errors = body.get("errors") if isinstance(body, dict) else None
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    def _rate_limited(self, response: httpx.Response) -> bool:
        if response.status_code == 429:
            return True
        return any(
            (e.get("extensions") or {}).get("code") == "RATELIMITED" for e in self._errors(response)
        )

    def error_for(self, response: httpx.Response) -> PlatformError | None:
        errors = self._errors(response)
        status = response.status_code
        if not errors:
            if status < 400:
                return None
            return error_for_status(status, self.error_message(response), platform="linear")
        first = errors[0]
        extensions = first.get("extensions") or {}
        code = str(extensions.get("code") or "") or None
        message = str(
            extensions.get("userPresentableMessage") or first.get("message") or "GraphQL error"
        )
        if self._rate_limited(response):
            wait = self._reset_after(response.headers.get("x-ratelimit-requests-reset"))
            return error_for_status(
                429, message, platform="linear", code=code, retry_after=wait or 1.0
            )
        if status >= 500 or code == "INTERNAL_SERVER_ERROR":
            error: PlatformError = PlatformUnavailable(
                message, platform="linear", status=status, code=code
            )
            error.maybe_applied = True
            return error
        raw = f"{first.get('message', '')} {message}".lower()
        if "not found" in raw or "could not find" in raw or code == "ENTITY_NOT_FOUND":
            return PlatformNotFound(message, platform="linear", status=status, code=code)
        return PlatformRequestError(message, platform="linear", status=status, code=code)


class LinearClient(PlatformClient):
    """The Linear GraphQL API for one API key (``CONTEXTEN_LINEAR_API_KEY``).

    Issue arguments accept the UUID or the identifier (``ENG-123``). Methods return the
    GraphQL ``data`` objects as Linear sent them.

    Workflow states (per team) and issue labels are looked up through ``lookup_cache`` for
    ``lookup_ttl`` seconds (default: an in-process LRU of 1,024 entries, single-flight; give
    a :class:`~contexten.cache.MultiLevelCache` over a
    :class:`~contexten.cache.store.StoreCache` to share them between processes), and
    dropped early by :meth:`invalidate` (see
    :func:`~contexten.integrations.linear.lookup_invalidation`).
    """

    platform: ClassVar[str] = "linear"
    token_env: ClassVar[str] = "CONTEXTEN_LINEAR_API_KEY"
    default_base_url: ClassVar[str] = "https://api.linear.app"
    sandbox_path: ClassVar[str] = "/linear"

    def __init__(
        self,
        *args: Any,
        lookup_cache: MultiLevelCache | None = None,
        lookup_ttl: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lookup_cache = lookup_cache or MultiLevelCache(
            MemoryCache(1024, clock=kwargs.get("clock")), l1_ttl=None, clock=kwargs.get("clock")
        )
        """Where workflow states and labels are kept (bounded, with ttl, single-flight)."""
        self.lookup_ttl = lookup_ttl
        """Seconds a cached lookup lives; events drop entries sooner (:meth:`invalidate`)."""

    async def _lookup(self, key: str, query: str, field: str, variables: JSON) -> list[JSON]:
        async def load() -> list[JSON]:
            data = await self.graphql(query, variables)
            return list((data.get(field) or {}).get("nodes", []))

        value: list[JSON] = await self.lookup_cache.get_or_load(key, load, ttl=self.lookup_ttl)
        return value

    async def invalidate(self, event_type: str, data: JSON | None = None) -> int:
        """Drop the cached lookups a ``linear.workflow_state.*`` or ``linear.issue_label.*``
        event changes; return how many entries went. Other events change nothing."""
        if event_type.startswith("linear.workflow_state."):
            team = ((data or {}).get("team") or {}).get("id") or (data or {}).get("teamId")
            if isinstance(team, str) and team:
                return int(await self.lookup_cache.delete(f"{_STATES_KEY}{team}"))
            return await self.lookup_cache.clear(_STATES_KEY)
        if event_type.startswith("linear.issue_label."):
            return int(await self.lookup_cache.delete(_LABELS_KEY))
        return 0

    def _adapter(self) -> PlatformAdapter:
        return LinearAdapter()

    async def graphql(
        self, query: str, variables: JSON | None = None, *, replay_safe: bool = True
    ) -> JSON:
        """Run one GraphQL operation; returns its ``data``."""
        response = await self.http.request(
            "POST",
            "/graphql",
            json={"query": query, "variables": variables or {}},
            replay_safe=replay_safe,
        )
        data = response.json().get("data")
        if not isinstance(data, dict):
            raise PlatformRequestError("response has no data", platform="linear")
        return data

    async def _mutate(self, query: str, variables: JSON, field: str, *, replay_safe: bool) -> JSON:
        payload = (await self.graphql(query, variables, replay_safe=replay_safe)).get(field) or {}
        if not payload.get("success", False):
            raise PlatformRequestError(f"{field} did not succeed", platform="linear")
        result: JSON = payload
        return result

    # -- issues -------------------------------------------------------------------------------

    async def get_issue(self, issue_id: str) -> JSON:
        """One issue, by UUID or identifier."""
        issue = (await self.graphql(_Q_ISSUE, {"id": issue_id})).get("issue")
        if not issue:
            raise PlatformNotFound(f"issue {issue_id} not found", platform="linear")
        result: JSON = issue
        return result

    async def create_issue(
        self,
        *,
        team_id: str,
        title: str,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> JSON:
        """Create an issue (``description``, ``stateId``, ``labelIds``... as keywords)."""
        issue_input: JSON = {"teamId": team_id, "title": title, **fields}
        # Always a client-chosen id: Linear's IssuePayload.issue may be null, and the id
        # lets the issue be read back then.
        issue_input["id"] = (
            id_for_key(idempotency_key, "linear:issue")
            if idempotency_key is not None
            else str(uuid.uuid4())
        )

        async def lookup() -> JSON | None:
            try:
                return await self.get_issue(issue_input["id"])
            except PlatformNotFound:
                return None

        async def create() -> JSON:
            payload = await self._mutate(
                _M_ISSUE_CREATE, {"input": issue_input}, "issueCreate", replay_safe=False
            )
            issue: JSON | None = payload.get("issue")
            return issue if issue is not None else await self.get_issue(issue_input["id"])

        return await self.create_once("linear:issue", idempotency_key, lookup, create)

    async def update_issue(self, issue_id: str, **fields: Any) -> JSON:
        """Update an issue with ``IssueUpdateInput`` fields (``stateId``, ``assigneeId``,
        ``addedLabelIds``, ``removedLabelIds``, ``title``...); returns the issue."""
        payload = await self._mutate(
            _M_ISSUE_UPDATE, {"id": issue_id, "input": fields}, "issueUpdate", replay_safe=True
        )
        issue: JSON | None = payload.get("issue")  # nullable in Linear's schema
        return issue if issue is not None else await self.get_issue(issue_id)

    async def archive_issue(self, issue_id: str) -> JSON:
        """Archive an issue."""
        return await self._mutate(
            _M_ISSUE_ARCHIVE, {"id": issue_id}, "issueArchive", replay_safe=True
        )

    async def unarchive_issue(self, issue_id: str) -> JSON:
        """Bring an archived issue back."""
        return await self._mutate(
            _M_ISSUE_UNARCHIVE, {"id": issue_id}, "issueUnarchive", replay_safe=True
        )

    # -- comments -----------------------------------------------------------------------------

    async def get_comment(self, comment_id: str) -> JSON:
        """One comment."""
        comment = (await self.graphql(_Q_COMMENT, {"id": comment_id})).get("comment")
        if not comment:
            raise PlatformNotFound(f"comment {comment_id} not found", platform="linear")
        result: JSON = comment
        return result

    async def create_comment(
        self, issue_id: str, body: str, *, idempotency_key: str | None = None
    ) -> JSON:
        """Comment on an issue (once per idempotency key)."""
        comment_input: JSON = {"issueId": issue_id, "body": body}
        # Always a client-chosen id, to read the comment back if the payload's is null.
        comment_input["id"] = (
            id_for_key(idempotency_key, "linear:comment")
            if idempotency_key is not None
            else str(uuid.uuid4())
        )

        async def lookup() -> JSON | None:
            try:
                return await self.get_comment(comment_input["id"])
            except PlatformNotFound:
                return None

        async def create() -> JSON:
            payload = await self._mutate(
                _M_COMMENT_CREATE, {"input": comment_input}, "commentCreate", replay_safe=False
            )
            comment: JSON | None = payload.get("comment")
            return comment if comment is not None else await self.get_comment(comment_input["id"])

        return await self.create_once("linear:comment", idempotency_key, lookup, create)

    async def delete_comment(self, comment_id: str, *, missing_ok: bool = True) -> None:
        """Delete a comment; one already gone is fine unless ``missing_ok`` is false."""
        try:
            await self._mutate(
                _M_COMMENT_DELETE, {"id": comment_id}, "commentDelete", replay_safe=True
            )
        except PlatformNotFound:
            if not missing_ok:
                raise

    # -- workflow states and labels (cached) --------------------------------------------------

    async def workflow_states(self, team_id: str, *, refresh: bool = False) -> list[JSON]:
        """A team's workflow states (cached; ``refresh`` re-reads them)."""
        key = f"{_STATES_KEY}{team_id}"
        if refresh:
            await self.lookup_cache.delete(key)
        return await self._lookup(key, _Q_STATES, "workflowStates", {"teamId": team_id})

    async def workflow_state(self, team_id: str, name: str) -> JSON:
        """The team's state called ``name`` (case-insensitive), re-reading once if unknown."""
        for refresh in (False, True):
            for state in await self.workflow_states(team_id, refresh=refresh):
                if str(state.get("name", "")).lower() == name.lower():
                    return state
        raise PlatformRequestError(
            f"team {team_id} has no workflow state named {name!r}", platform="linear"
        )

    async def label_ids(self, names: list[str], team_id: str | None = None) -> list[str]:
        """The ids of labels by name (workspace labels and the team's), cached."""
        for refresh in (False, True):
            if refresh:
                await self.lookup_cache.delete(_LABELS_KEY)
            labels = await self._lookup(_LABELS_KEY, _Q_LABELS, "issueLabels", {})
            by_name: dict[str, str] = {}
            for label in labels:
                label_team = (label.get("team") or {}).get("id")
                if label_team in (None, team_id):
                    by_name.setdefault(str(label["name"]).lower(), str(label["id"]))
            if all(n.lower() in by_name for n in names):
                return [by_name[n.lower()] for n in names]
        missing = [n for n in names if n.lower() not in by_name]
        raise PlatformRequestError(f"unknown labels: {', '.join(missing)}", platform="linear")
