"""Seeding the shadow's sandbox so the platforms look to the new code as they did for real.

Shadow replay (:mod:`contexten.testing.shadow`) runs new code against the in-process sandbox.
An empty sandbox would answer "not found" to the first call about anything the recorded
webhooks name, so :class:`ShadowSeeder` makes the sandbox hold what the recording shows:

* **objects named by recorded webhooks**, as the webhook shows them, when the new code has not
  made them itself: GitHub issues and pull requests; Linear teams, workflow states, labels and
  issues (and a person's later change to an issue, the fields its ``updatedFrom`` names);
  Slack channels and messages (a button press names the message it was on); Codegen agent
  runs, whose status follows the recorded ``codegen.agent_run.*`` events (the sandbox's own
  runs never progress in a shadow run: the real agent's outcome is the recorded one);
* **the ids the real platform gave our own objects**: every recorded action that created
  something (a pull request, an agent run, a Slack message) reserves its id, number or
  ``ts`` under the action's idempotency key, so when the new code makes the same call the
  sandbox answers with the id that later recorded webhooks (a run's completion, a press on
  the approval message) refer to.

Recorded webhooks the recording itself marked as echoes of our own actions
(``contexten.echo.detected``) are consequences of the *old* code's actions: they are neither
re-fed nor seeded; the new code's actions change the sandbox themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from contexten.events.envelope import Event
from contexten.integrations.idempotency import platform_key
from contexten.store.base import RecordedEvent
from contexten.testing.sandbox import Sandbox
from contexten.testing.sandbox.linear import ISSUE_FIELDS

__all__ = ["ShadowSeeder"]

JSON = dict[str, Any]

_ECHO: Final = "contexten.echo.detected"
_ACTION: Final = "contexten.action."
_UPDATABLE: Final = ("title", "description", "priority", "stateId", "assigneeId", "labelIds")
_RUN_FIELDS: Final = ("status", "result", "summary", "github_pull_requests", "web_url")


class ShadowSeeder:
    """Seeds ``sandbox`` from a recording (see the module docstring).

    Args:
        sandbox: the shadow run's sandbox.
        records: everything the recorded store holds (its actions reserve ids, its echo
            marks say which webhooks our own actions caused).
    """

    def __init__(self, sandbox: Sandbox, records: Iterable[RecordedEvent]) -> None:
        self.sandbox = sandbox
        self.echoes: set[str] = set()
        self.reserved = 0
        for rec in records:
            event = rec.event
            if event.type == _ECHO:
                self.echoes.add(str(event.data.get("event_id")))
            elif event.type.startswith(_ACTION):
                self._reserve(event.data)

    def recorded_echo(self, event: Event) -> bool:
        """Whether the recording marked ``event`` as an echo of one of our own actions."""
        return event.id in self.echoes

    def seed(self, event: Event) -> None:
        """Make what recorded webhook ``event`` is about exist in the sandbox (as it shows
        it), before the new code handles it."""
        platform = event.type.split(".", 1)[0]
        if platform == "github":
            self._github(event.data)
        elif platform == "linear":
            self._linear(event.data)
        elif platform == "slack":
            self._slack(event)
        elif platform == "codegen":
            self._codegen(event.data)

    # -- reservations -----------------------------------------------------------------------

    def _reserve(self, data: JSON) -> None:
        key, result = data.get("idempotency_key"), data.get("result")
        if not isinstance(key, str) or not isinstance(result, dict):
            return
        core = self.sandbox.core
        platform, action = data.get("platform"), data.get("action")
        if platform == "codegen" and action == "create_agent_run" and "id" in result:
            core.reserve("codegen.run", key, int(result["id"]))
        elif platform == "slack" and isinstance(result.get("ts"), str):
            core.reserve("slack.ts", key, result["ts"])
        elif platform == "github" and isinstance(result.get("number"), int):
            repo = _repo_of(result.get("url"))
            if repo is None:
                return
            core.reserve(f"github.number:{repo}", platform_key(key), result["number"])
        else:
            return
        self.reserved += 1

    # -- GitHub ------------------------------------------------------------------------------

    def _github(self, data: JSON) -> None:
        repo_name = (data.get("repository") or {}).get("full_name")
        item = data.get("issue") or data.get("pull_request")
        if not repo_name or not isinstance(item, dict) or "number" not in item:
            return
        repo = self.sandbox.github.repo(str(repo_name))
        number = int(item["number"])
        if number not in repo.issues:
            seeded = dict(item)
            seeded["comments"] = 0
            seeded.setdefault("url", f"https://api.github.com/repos/{repo_name}/issues/{number}")
            seeded.setdefault("html_url", f"https://github.com/{repo_name}/issues/{number}")
            repo.issues[number] = seeded
            repo.next_number = max(repo.next_number, number + 1)

    # -- Linear ------------------------------------------------------------------------------

    def _linear(self, data: JSON) -> None:
        issue = data.get("data")
        if data.get("type") != "Issue" or not isinstance(issue, dict) or "id" not in issue:
            return
        linear = self.sandbox.linear
        team_id = self._linear_team(issue)
        state = issue.get("state") or {}
        if issue.get("stateId") and issue["stateId"] not in linear.states:
            self._linear_state(team_id, issue["stateId"], state)
        for label in issue.get("labels") or []:
            if isinstance(label, dict) and label.get("id") not in linear.labels:
                linear.labels[label["id"]] = {
                    "id": label["id"],
                    "name": label.get("name", ""),
                    "team": None,
                    "color": label.get("color", "#5e6ad2"),
                }
        current = linear.issues.get(issue["id"])
        if current is None:
            linear.issues[issue["id"]] = {k: issue.get(k) for k in ISSUE_FIELDS}
            linear.issues[issue["id"]]["labelIds"] = list(issue.get("labelIds") or [])
            team = linear.teams[team_id]
            team["_next"] = max(team["_next"], int(issue.get("number") or 0) + 1)
            return
        changed = data.get("updatedFrom") or {}  # a person's change: the fields it names
        for name in _UPDATABLE:
            if name in changed and name in issue:
                current[name] = list(issue[name]) if name == "labelIds" else issue[name]

    def _linear_state(self, team_id: str, state_id: str, state: JSON) -> None:
        """Add the real state, replacing a stand-in of the same name no issue is in."""
        linear = self.sandbox.linear
        name = state.get("name", "Unknown")
        in_use = {i["stateId"] for i in linear.issues.values()}
        for sid, known in list(linear.states.items()):
            if known["team"] == team_id and known["name"] == name and sid not in in_use:
                del linear.states[sid]
        linear.states[state_id] = {
            "id": state_id,
            "name": name,
            "type": state.get("type", "unstarted"),
            "position": len(linear.states),
            "color": state.get("color", "#bec2c8"),
            "team": team_id,
        }

    def _linear_team(self, issue: JSON) -> str:
        linear = self.sandbox.linear
        team = issue.get("team") or {}
        team_id = str(issue.get("teamId") or team.get("id"))
        if team_id not in linear.teams:
            key = str(team.get("key") or "TEAM")
            same_key = next((t for t in linear.teams.values() if t["key"] == key), None)
            if same_key is not None:  # the default team, under the real team's id
                del linear.teams[same_key["id"]]
                for state in linear.states.values():
                    if state["team"] == same_key["id"]:
                        state["team"] = team_id
            linear.teams[team_id] = {
                "id": team_id,
                "key": key,
                "name": team.get("name", key),
                "_next": same_key["_next"] if same_key else 1,
            }
            if same_key is None:
                for position, (name, kind) in enumerate(_default_states()):
                    sid = f"{team_id}:{name}"
                    linear.states[sid] = {
                        "id": sid,
                        "name": name,
                        "type": kind,
                        "position": position,
                        "color": "#bec2c8",
                        "team": team_id,
                    }
        return team_id

    # -- Slack -------------------------------------------------------------------------------

    def _slack(self, event: Event) -> None:
        data = event.data
        inner = data.get("event") if isinstance(data.get("event"), dict) else None
        if inner is not None:  # an Events API callback: a message someone posted
            channel = inner.get("channel")
            if isinstance(channel, str) and inner.get("type") == "message" and "ts" in inner:
                self._slack_message(channel, None, inner)
            return
        channel_info = data.get("channel") or {}
        container = data.get("container") or {}
        channel = channel_info.get("id") or container.get("channel_id")
        message = data.get("message")
        if isinstance(channel, str) and isinstance(message, dict) and "ts" in message:
            self._slack_message(channel, channel_info.get("name"), message)

    def _slack_message(self, channel: str, name: str | None, message: JSON) -> None:
        slack = self.sandbox.slack
        if channel not in slack.channels:
            same_name = slack.channel_id(f"#{name}") if name else None
            if same_name is not None:  # the default channel, under the real channel's id
                slack.messages[channel] = slack.messages.pop(same_name)
                del slack.channels[same_name]
            slack.channels[channel] = name or channel.lower()
            slack.messages.setdefault(channel, {})
        known = slack.messages[channel]
        if message["ts"] not in known:
            known[message["ts"]] = {
                k: v for k, v in message.items() if k not in ("channel", "event_ts", "channel_type")
            }

    # -- Codegen -----------------------------------------------------------------------------

    def _codegen(self, data: JSON) -> None:
        if "id" not in data:
            return
        codegen = self.sandbox.codegen
        run_id = int(data["id"])
        run = codegen.runs.get(run_id)
        if run is None:
            run = {**data, "_prompt": ""}
            codegen.runs[run_id] = run
        for name in _RUN_FIELDS:
            if name in data:
                run[name] = data[name]


def _default_states() -> list[tuple[str, str]]:
    from contexten.testing.sandbox.linear import DEFAULT_STATES

    return list(DEFAULT_STATES)


def _repo_of(url: Any) -> str | None:
    """``owner/name`` of a GitHub API URL (``https://api.github.com/repos/o/n/pulls/1``)."""
    if not isinstance(url, str) or "/repos/" not in url:
        return None
    parts = url.split("/repos/", 1)[1].split("/")
    return f"{parts[0]}/{parts[1]}" if len(parts) >= 2 else None
