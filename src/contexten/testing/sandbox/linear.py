"""The sandbox's Linear GraphQL API: issues, comments, workflow states, labels; Linear's
rate-limit headers and error shapes; ``Issue`` and ``Comment`` webhooks with ``updatedFrom``.

Every request is validated against Linear's published schema (graphql-core, see
:mod:`contexten.testing.specs`) and refused with Linear's ``GRAPHQL_VALIDATION_FAILED`` shape
when Linear would refuse it: unknown fields or arguments, wrong variable types, unknown input
fields. The operation is recognised by its root field (``issueUpdate``, ``commentCreate``,
``workflowStates``...), whose handler reads the (coerced) variables, as real clients send
inputs; the answer is then cut to the fields the document selects, with its aliases.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contexten.testing.sandbox.core import Core, Emulator, iso, json_response
from contexten.testing.sandbox.faults import Fault
from contexten.testing.specs import linear_schema

__all__ = ["ISSUE_FIELDS", "ISSUE_SCALARS", "LinearEmulator"]

JSON = dict[str, Any]

ISSUE_SCALARS: Final = (
    "id",
    "identifier",
    "number",
    "title",
    "description",
    "priority",
    "url",
    "createdAt",
    "updatedAt",
    "archivedAt",
)
"""The fields of a kept issue that its GraphQL form carries as they are."""
ISSUE_FIELDS: Final = (*ISSUE_SCALARS, "stateId", "teamId", "assigneeId", "creatorId", "labelIds")
"""Every field of an issue as the emulator keeps it (``issues[id]``)."""

_ROOT_RE = re.compile(r"^\s*(?:query|mutation)?\s*\w*\s*(?:\([^)]*\))?\s*\{\s*(\w+)", re.S)
DEFAULT_STATES = [
    ("Backlog", "backlog"),
    ("Todo", "unstarted"),
    ("In Progress", "started"),
    ("In Review", "started"),
    ("Done", "completed"),
    ("Canceled", "canceled"),
]
DEFAULT_LABELS = ["agent", "bug", "feature"]
_COMPLEXITY = 10
_PRIORITY_LABELS = {0: "No priority", 1: "Urgent", 2: "High", 3: "Medium", 4: "Low"}


def root_field(query: str) -> str | None:
    """The first root field of a GraphQL document (``issueUpdate``), or ``None``."""
    match = _ROOT_RE.match(query)
    return match.group(1) if match else None


class LinearEmulator(Emulator):
    """Linear GraphQL, in memory, with one team (``ENG``) seeded."""

    platform = "linear"

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.reset()

    def reset(self) -> None:
        self.teams: dict[str, JSON] = {}
        self.states: dict[str, JSON] = {}
        self.labels: dict[str, JSON] = {}
        self.issues: dict[str, JSON] = {}
        self.comments: dict[str, JSON] = {}
        self.users: dict[str, JSON] = {}
        self._budget: dict[str, list[int]] = {}
        self.bot = self.add_user(self.core.config.linear_bot_user, "Contexten")
        self.human = self.add_user("ada", "Ada Lovelace")
        self.team = self.add_team("ENG", "Engineering")

    # -- seeding --------------------------------------------------------------------------------

    def add_user(self, handle: str, name: str) -> JSON:
        """Add a user."""
        user = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"linear-user:{handle}")),
            "name": name,
            "displayName": handle,
            "email": f"{handle}@example.com",
        }
        self.users[user["id"]] = user
        return user

    def add_team(self, key: str, name: str) -> JSON:
        """Add a team with the default workflow states and labels."""
        team: JSON = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"linear-team:{key}")),
            "key": key,
            "name": name,
            "_next": 1,
        }
        self.teams[team["id"]] = team
        for position, (state_name, kind) in enumerate(DEFAULT_STATES):
            sid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"linear-state:{key}:{state_name}"))
            self.states[sid] = {
                "id": sid,
                "name": state_name,
                "type": kind,
                "position": position,
                "color": "#bec2c8",
                "team": team["id"],
            }
        for label in DEFAULT_LABELS:
            lid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"linear-label:{label}"))
            self.labels[lid] = {"id": lid, "name": label, "team": None, "color": "#5e6ad2"}
        return team

    def state_named(self, team_id: str, name: str) -> JSON:
        """A team's state by name."""
        return next(
            s
            for s in self.states.values()
            if s["team"] == team_id and s["name"].lower() == name.lower()
        )

    def label_named(self, name: str) -> JSON:
        """A label by name."""
        return next(label for label in self.labels.values() if label["name"] == name)

    def create_issue(
        self,
        title: str,
        description: str = "",
        *,
        team_key: str = "ENG",
        state: str = "Todo",
        labels: list[str] | None = None,
        actor: JSON | None = None,
        issue_id: str | None = None,
    ) -> JSON:
        """Create an issue (as a human by default); sends an ``Issue`` ``create`` webhook."""
        team = next(t for t in self.teams.values() if t["key"] == team_key)
        number, team["_next"] = team["_next"], team["_next"] + 1
        iid = issue_id or str(uuid.uuid4())
        issue = {
            "id": iid,
            "identifier": f"{team['key']}-{number}",
            "number": number,
            "title": title,
            "description": description,
            "priority": 0,
            "url": f"https://linear.app/sandbox/issue/{team['key']}-{number}",
            "createdAt": iso(),
            "updatedAt": iso(),
            "archivedAt": None,
            "stateId": self.state_named(team["id"], state)["id"],
            "teamId": team["id"],
            "assigneeId": None,
            "creatorId": (actor or self.human)["id"],
            "labelIds": [self.label_named(n)["id"] for n in labels or []],
        }
        self.issues[iid] = issue
        self._hook("Issue", "create", self.issue_webhook_data(issue), actor or self.human)
        return self.issue_json(issue)

    def update_issue(self, issue_id: str, fields: JSON, actor: JSON | None = None) -> JSON:
        """Apply ``IssueUpdateInput`` fields; sends an ``Issue`` ``update`` webhook."""
        issue = self._find_issue(issue_id)
        if issue is None:
            raise KeyError(issue_id)
        before = self.issue_webhook_data(issue)
        labels = list(issue["labelIds"])
        labels += [lid for lid in fields.get("addedLabelIds") or [] if lid not in labels]
        labels = [lid for lid in labels if lid not in (fields.get("removedLabelIds") or [])]
        if "labelIds" in fields:
            labels = list(fields["labelIds"])
        issue["labelIds"] = labels
        for key in ("title", "description", "priority", "stateId", "assigneeId"):
            if key in fields:
                issue[key] = fields[key]
        issue["updatedAt"] = iso()
        after = self.issue_webhook_data(issue)
        updated_from = {
            k: before[k]
            for k in ("title", "description", "priority", "stateId", "assigneeId", "labelIds")
            if before[k] != after[k]
        }
        if updated_from:
            updated_from["updatedAt"] = before["updatedAt"]
            self._hook("Issue", "update", after, actor or self.bot, updated_from=updated_from)
        return self.issue_json(issue)

    # -- shapes ---------------------------------------------------------------------------------

    def _find_issue(self, key: str) -> JSON | None:
        if key in self.issues:
            return self.issues[key]
        return next((i for i in self.issues.values() if i["identifier"] == key), None)

    def issue_json(self, issue: JSON) -> JSON:
        """An issue as the GraphQL API returns it."""
        state = self.states[issue["stateId"]]
        team = self.teams[issue["teamId"]]
        return {
            **{k: issue[k] for k in ISSUE_SCALARS},
            "state": {k: state[k] for k in ("id", "name", "type")},
            "team": {"id": team["id"], "key": team["key"], "name": team["name"]},
            "assignee": self.users.get(issue["assigneeId"] or ""),
            "labels": {
                "nodes": [
                    {"id": lid, "name": self.labels[lid]["name"]} for lid in issue["labelIds"]
                ]
            },
        }

    def issue_webhook_data(self, issue: JSON) -> JSON:
        """An issue as webhooks carry it (ids flat, plus nested state/team/labels)."""
        state = self.states[issue["stateId"]]
        team = self.teams[issue["teamId"]]
        return {
            **{k: issue[k] for k in issue if not k.startswith("_")},
            # Fields Linear's schema marks required on IssueWebhookPayload.
            "priorityLabel": _PRIORITY_LABELS.get(issue["priority"], "No priority"),
            "prioritySortOrder": float(issue["priority"]),
            "sortOrder": float(issue["number"]),
            "previousIdentifiers": [],
            "subscriberIds": [issue["creatorId"]],
            "reactionData": {},
            "state": {k: state[k] for k in ("id", "name", "type", "color")},
            "team": {"id": team["id"], "key": team["key"], "name": team["name"]},
            "labels": [
                {k: self.labels[lid][k] for k in ("id", "name", "color")}
                for lid in issue["labelIds"]
            ],
        }

    def comment_json(self, comment: JSON) -> JSON:
        issue = self.issues[comment["issueId"]]
        return {
            "id": comment["id"],
            "body": comment["body"],
            "url": comment["url"],
            "createdAt": comment["createdAt"],
            "issue": {"id": issue["id"], "identifier": issue["identifier"]},
            "user": self.users.get(comment["userId"]),
        }

    def _hook(
        self, kind: str, action: str, data: JSON, actor: JSON, updated_from: JSON | None = None
    ) -> None:
        if actor is self.bot and not self.core.config.webhooks_for_api_calls:
            return
        payload: JSON = {
            "action": action,
            "type": kind,
            "data": data,
            "url": data.get("url", ""),
            "createdAt": iso(),
            "actor": {"id": actor["id"], "name": actor["name"], "type": "user"},
            "organizationId": "sandbox-org",
            "webhookId": "sandbox-webhook",
        }
        if updated_from is not None:
            payload["updatedFrom"] = updated_from
        self.core.webhooks.linear(kind, payload)

    # -- HTTP -----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The Starlette routes, mounted under ``/linear``."""
        return [Route("/graphql", self.graphql, methods=["POST"])]

    def fault_key(self, path: str, body: bytes) -> str:
        import json

        try:
            return root_field(json.loads(body).get("query", "")) or path
        except ValueError:
            return path

    def _headers(self, key: str) -> dict[str, str]:
        used = self._budget.setdefault(key, [0, 0])
        cfg = self.core.config
        reset_ms = str(int(self.core.window_reset() * 1000))
        return {
            "X-RateLimit-Requests-Limit": str(cfg.linear_request_limit),
            "X-RateLimit-Requests-Remaining": str(max(cfg.linear_request_limit - used[0], 0)),
            "X-RateLimit-Requests-Reset": reset_ms,
            "X-RateLimit-Complexity-Limit": str(cfg.linear_complexity_limit),
            "X-RateLimit-Complexity-Remaining": str(max(cfg.linear_complexity_limit - used[1], 0)),
            "X-RateLimit-Complexity-Reset": reset_ms,
            "X-Complexity": str(_COMPLEXITY),
        }

    @staticmethod
    def _errors(
        message: str,
        code: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        user_message: str | None = None,
    ) -> Response:
        error = {
            "message": message,
            "extensions": {
                "code": code,
                "type": code.lower().replace("_", " "),
                "userError": status < 500,
                "userPresentableMessage": user_message or message,
            },
        }
        return json_response({"errors": [error], "data": None}, status, headers)

    def fault_response(self, fault: Fault) -> Response:
        if fault.kind == "rate_limit":
            reset = str(int((self.core.now() + fault.retry_after) * 1000))
            return self._errors(
                "Rate limit exceeded",
                "RATELIMITED",
                400,
                {"X-RateLimit-Requests-Remaining": "0", "X-RateLimit-Requests-Reset": reset},
                "Too many requests. Please wait before trying again.",
            )
        return self._errors("Internal server error", "INTERNAL_SERVER_ERROR", fault.status)

    async def graphql(self, request: Request) -> Response:
        key = request.headers.get("authorization", "")
        if not key and self.core.config.require_auth:
            return self._errors(
                "Authentication required, not authenticated", "AUTHENTICATION_ERROR", 400
            )
        used = self._budget.setdefault(key, [0, 0])
        used[0] += 1
        used[1] += _COMPLEXITY
        headers = self._headers(key)
        if used[0] > self.core.config.linear_request_limit:
            return self._errors("Rate limit exceeded", "RATELIMITED", 400, headers)
        try:
            body = await request.json()
        except ValueError:
            return self._errors("Body is not valid JSON", "BAD_USER_INPUT", 400, headers)
        if not isinstance(body, dict):
            return self._errors("Body must be a JSON object", "BAD_USER_INPUT", 400, headers)
        schema = linear_schema()
        checked = schema.check(body.get("query"), body.get("variables"), body.get("operationName"))
        if isinstance(checked, list):
            return self._errors(checked[0], "GRAPHQL_VALIDATION_FAILED", 400, headers)
        first = checked.operation.selection_set.selections[0]
        field = getattr(getattr(first, "name", None), "value", "")
        handler = getattr(self, f"op_{field}", None)
        if handler is None:
            return self._errors(
                f"The sandbox does not implement {field!r} (Linear's schema has it)",
                "INTERNAL_SERVER_ERROR",
                500,
                headers,
            )
        try:
            result = handler(checked.variables)
        except LookupError:
            return self._errors(
                "Entity not found", "INPUT_ERROR", 200, headers, "Could not find referenced entity."
            )
        except ValueError as error:
            return self._errors(str(error), "INVALID_INPUT", 200, headers)
        return json_response({"data": schema.select(checked, {field: result})}, 200, headers)

    # -- operations (one method per root field) -------------------------------------------------

    def op_issue(self, v: JSON) -> JSON:
        issue = self._find_issue(v["id"])
        if issue is None:
            raise LookupError(v["id"])
        return self.issue_json(issue)

    def op_issueCreate(self, v: JSON) -> JSON:
        data = v["input"]
        if data.get("id") and data["id"] in self.issues:
            raise ValueError("Entity with this id already exists")
        if not data.get("title") or data.get("teamId") not in self.teams:
            raise ValueError("Argument Validation Error: title and a valid teamId are required")
        team = self.teams[data["teamId"]]
        issue = self.create_issue(
            data["title"],
            data.get("description") or "",
            team_key=team["key"],
            actor=self.bot,
            issue_id=data.get("id"),
        )
        if data.get("stateId") or data.get("labelIds") or data.get("assigneeId"):
            fields = {k: data[k] for k in ("stateId", "labelIds", "assigneeId") if k in data}
            issue = self.update_issue(issue["id"], fields)
        return {"success": True, "issue": issue, "lastSyncId": self.core.next_id()}

    def op_issueUpdate(self, v: JSON) -> JSON:
        fields = v.get("input") or {}
        if "stateId" in fields and fields["stateId"] not in self.states:
            raise ValueError("Argument Validation Error: stateId is not a valid workflow state")
        for lid in (fields.get("addedLabelIds") or []) + (fields.get("removedLabelIds") or []):
            if lid not in self.labels:
                raise ValueError(f"Argument Validation Error: label {lid} does not exist")
        issue = self.update_issue(v["id"], fields)
        return {"success": True, "issue": issue, "lastSyncId": self.core.next_id()}

    def op_issueArchive(self, v: JSON) -> JSON:
        issue = self._find_issue(v["id"])
        if issue is None:
            raise LookupError(v["id"])
        issue["archivedAt"] = iso()
        return {"success": True, "lastSyncId": self.core.next_id()}

    def op_issueUnarchive(self, v: JSON) -> JSON:
        issue = self._find_issue(v["id"])
        if issue is None:
            raise LookupError(v["id"])
        issue["archivedAt"] = None
        return {"success": True, "lastSyncId": self.core.next_id()}

    def op_comment(self, v: JSON) -> JSON:
        comment = self.comments.get(v["id"])
        if comment is None:
            raise LookupError(v["id"])
        return self.comment_json(comment)

    def op_commentCreate(self, v: JSON) -> JSON:
        data = v["input"]
        if data.get("id") and data["id"] in self.comments:
            raise ValueError("Entity with this id already exists")
        issue = self._find_issue(data.get("issueId", ""))
        if issue is None:
            raise LookupError(data.get("issueId"))
        if not data.get("body"):
            raise ValueError("Argument Validation Error: body should not be empty")
        cid = data.get("id") or str(uuid.uuid4())
        comment = {
            "id": cid,
            "body": data["body"],
            "issueId": issue["id"],
            "userId": self.bot["id"],
            "createdAt": iso(),
            "updatedAt": iso(),
            "reactionData": {},
            "url": f"{issue['url']}#comment-{cid[:8]}",
        }
        self.comments[cid] = comment
        self._hook(
            "Comment",
            "create",
            {
                **comment,
                "issue": {
                    "id": issue["id"],
                    "identifier": issue["identifier"],
                    "title": issue["title"],
                    "url": issue["url"],
                    "teamId": issue["teamId"],
                    "team": {k: self.teams[issue["teamId"]][k] for k in ("id", "key", "name")},
                },
            },
            self.bot,
        )
        return {
            "success": True,
            "comment": self.comment_json(comment),
            "lastSyncId": self.core.next_id(),
        }

    def op_commentDelete(self, v: JSON) -> JSON:
        if self.comments.pop(v["id"], None) is None:
            raise LookupError(v["id"])
        return {"success": True, "lastSyncId": self.core.next_id()}

    def op_workflowStates(self, v: JSON) -> JSON:
        team_id = v.get("teamId")
        nodes = [
            {k: s[k] for k in ("id", "name", "type", "position", "color")}
            for s in self.states.values()
            if team_id in (None, s["team"])
        ]
        return {"nodes": nodes}

    def op_issueLabels(self, v: JSON) -> JSON:
        return {
            "nodes": [
                {"id": label["id"], "name": label["name"], "team": label["team"]}
                for label in self.labels.values()
            ]
        }

    def op_viewer(self, v: JSON) -> JSON:
        return dict(self.bot)
