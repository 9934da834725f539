"""Linear actions: mutating calls with their compensations, usable as workflow steps.

Each action takes ``client=`` (default: the registry's Linear client) and
``idempotency_key=``, and returns Linear's objects. Where an undo needs what was there before
(the state an issue was moved from), the result carries it under ``"contexten_previous"``.
Compensations are ``action.undo`` (convention in :mod:`contexten.integrations.action`)::

    await wf.step(linear.move_issue, issue_id, state="In Review",
                  compensate=linear.move_issue.undo)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from contexten.events import Event
from contexten.integrations.action import action
from contexten.integrations.client import current_clients
from contexten.integrations.linear.client import LinearClient

__all__ = [
    "add_issue_labels",
    "archive_issue",
    "assign_issue",
    "close_linked_issue",
    "create_comment",
    "create_issue",
    "find_issue_identifier",
    "get_issue",
    "move_issue",
    "remove_issue_labels",
    "update_issue",
    "workflow_state",
]

JSON = dict[str, Any]

_IDENTIFIER_RE = re.compile(r"\b([A-Z][A-Z0-9]{1,9}-\d+)\b")
_RESTORABLE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "title": lambda issue: issue.get("title"),
    "description": lambda issue: issue.get("description"),
    "priority": lambda issue: issue.get("priority"),
    "stateId": lambda issue: (issue.get("state") or {}).get("id"),
    "assigneeId": lambda issue: (issue.get("assignee") or {}).get("id"),
}


def _client(client: LinearClient | None) -> LinearClient:
    return client if client is not None else current_clients().get(LinearClient)


def _fingerprint(result: Any) -> list[str]:
    if isinstance(result, dict) and result.get("id"):
        return [f"linear:{result['id']}"]
    return []


def _previous(result: Any) -> JSON:
    if not isinstance(result, dict) or "contexten_previous" not in result:
        raise ValueError("this compensation needs the step's result (with contexten_previous)")
    previous: JSON = result["contexten_previous"]
    return previous


async def get_issue(issue_id: str, *, client: LinearClient | None = None) -> JSON:
    """One issue, by UUID or identifier (``ENG-123``)."""
    return await _client(client).get_issue(issue_id)


async def workflow_state(team_id: str, name: str, *, client: LinearClient | None = None) -> JSON:
    """A team's workflow state by name (cached by the client, see ``LinearClient.lookup_cache``)."""
    return await _client(client).workflow_state(team_id, name)


@action(platform="linear", fingerprint=_fingerprint)
async def create_issue(
    team_id: str,
    title: str,
    *,
    description: str | None = None,
    state: str | None = None,
    labels: list[str] | None = None,
    assignee_id: str | None = None,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON:
    """Create an issue (state and labels by name). Undo: archive it."""
    lin = _client(client)
    fields: JSON = {}
    if description is not None:
        fields["description"] = description
    if state is not None:
        fields["stateId"] = (await lin.workflow_state(team_id, state))["id"]
    if labels:
        fields["labelIds"] = await lin.label_ids(labels, team_id)
    if assignee_id is not None:
        fields["assigneeId"] = assignee_id
    return await lin.create_issue(
        team_id=team_id, title=title, idempotency_key=idempotency_key, **fields
    )


@create_issue.compensation
async def _archive_created_issue(
    *args: Any, result: Any = None, client: LinearClient | None = None, **_: Any
) -> JSON:
    if not isinstance(result, dict):
        raise ValueError("this compensation needs the step's result (the issue)")
    return await _client(client).archive_issue(result["id"])


@action(platform="linear", fingerprint=_fingerprint)
async def update_issue(
    issue_id: str,
    *,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
    **fields: Any,
) -> JSON:
    """Update an issue with ``IssueUpdateInput`` fields (``title``, ``stateId``...).

    Undo: put back the previous ``title``, ``description``, ``priority``, ``stateId`` and
    ``assigneeId`` among those changed.
    """
    lin = _client(client)
    before = await lin.get_issue(issue_id)
    previous = {k: read(before) for k, read in _RESTORABLE.items() if k in fields}
    issue = await lin.update_issue(issue_id, **fields)
    return {**issue, "contexten_previous": previous}


@update_issue.compensation
async def _restore_issue(
    issue_id: str, *args: Any, result: Any = None, client: LinearClient | None = None, **_: Any
) -> JSON:
    previous = _previous(result)
    if not previous:
        return {}
    return await _client(client).update_issue(issue_id, **previous)


@action(platform="linear", fingerprint=_fingerprint)
async def move_issue(
    issue_id: str,
    *,
    state: str,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON:
    """Move an issue to the workflow state called ``state`` in its team.

    Undo: move it back to the state it was in.
    """
    lin = _client(client)
    issue = await lin.get_issue(issue_id)
    target = await lin.workflow_state(issue["team"]["id"], state)
    previous = issue.get("state") or {}
    if previous.get("id") == target["id"]:
        updated = issue
    else:
        updated = await lin.update_issue(issue_id, stateId=target["id"])
    return {**updated, "contexten_previous": {"state": previous}}


@move_issue.compensation
async def _move_back(
    issue_id: str, *args: Any, result: Any = None, client: LinearClient | None = None, **_: Any
) -> JSON:
    state = _previous(result).get("state") or {}
    if not state.get("id"):
        return {}
    return await _client(client).update_issue(issue_id, stateId=state["id"])


@action(platform="linear", fingerprint=_fingerprint)
async def assign_issue(
    issue_id: str,
    assignee_id: str | None,
    *,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON:
    """Assign an issue (``None`` unassigns). Undo: give it back to the previous assignee."""
    lin = _client(client)
    before = await lin.get_issue(issue_id)
    issue = await lin.update_issue(issue_id, assigneeId=assignee_id)
    previous = (before.get("assignee") or {}).get("id")
    return {**issue, "contexten_previous": {"assigneeId": previous}}


@assign_issue.compensation
async def _reassign(
    issue_id: str, *args: Any, result: Any = None, client: LinearClient | None = None, **_: Any
) -> JSON:
    return await _client(client).update_issue(
        issue_id, assigneeId=_previous(result).get("assigneeId")
    )


async def _label_ids(lin: LinearClient, issue_id: str, labels: list[str]) -> list[str]:
    issue = await lin.get_issue(issue_id)
    return await lin.label_ids(labels, (issue.get("team") or {}).get("id"))


async def _change_labels(
    issue_id: str, labels: list[str], *, add: bool, client: LinearClient | None
) -> JSON:
    """Add (or remove) labels by name: the body of the label actions and their undos."""
    lin = _client(client)
    ids = await _label_ids(lin, issue_id, labels)
    if add:
        return await lin.update_issue(issue_id, addedLabelIds=ids)
    return await lin.update_issue(issue_id, removedLabelIds=ids)


@action(platform="linear", fingerprint=_fingerprint)
async def add_issue_labels(
    issue_id: str,
    labels: list[str],
    *,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON:
    """Add labels by name. Undo: remove them."""
    return await _change_labels(issue_id, labels, add=True, client=client)


@add_issue_labels.compensation
async def _remove_added(
    issue_id: str, labels: list[str], *args: Any, client: LinearClient | None = None, **_: Any
) -> JSON:
    return await _change_labels(issue_id, labels, add=False, client=client)


@action(platform="linear", fingerprint=_fingerprint)
async def remove_issue_labels(
    issue_id: str,
    labels: list[str],
    *,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON:
    """Remove labels by name. Undo: add them back."""
    return await _change_labels(issue_id, labels, add=False, client=client)


@remove_issue_labels.compensation
async def _readd(
    issue_id: str, labels: list[str], *args: Any, client: LinearClient | None = None, **_: Any
) -> JSON:
    return await _change_labels(issue_id, labels, add=True, client=client)


@action(platform="linear", fingerprint=_fingerprint)
async def create_comment(
    issue_id: str,
    body: str,
    *,
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON:
    """Comment on an issue. Undo: delete the comment."""
    return await _client(client).create_comment(issue_id, body, idempotency_key=idempotency_key)


@create_comment.compensation
async def _delete_comment(
    *args: Any, result: Any = None, client: LinearClient | None = None, **_: Any
) -> None:
    if not isinstance(result, dict):
        raise ValueError("this compensation needs the step's result (the comment)")
    await _client(client).delete_comment(result["id"])


@action(platform="linear")
async def archive_issue(
    issue_id: str, *, idempotency_key: str | None = None, client: LinearClient | None = None
) -> JSON:
    """Archive an issue. Undo: unarchive it."""
    return await _client(client).archive_issue(issue_id)


@archive_issue.compensation
async def _unarchive(
    issue_id: str, *args: Any, client: LinearClient | None = None, **_: Any
) -> JSON:
    return await _client(client).unarchive_issue(issue_id)


def find_issue_identifier(*texts: str | None) -> str | None:
    """The first Linear identifier (``ENG-123``) in ``texts`` (branch, title, body...)."""
    for text in texts:
        if text and (match := _IDENTIFIER_RE.search(text)):
            return match.group(1)
    return None


@action(platform="linear", fingerprint=_fingerprint)
async def close_linked_issue(
    event: Event,
    *,
    state: str = "Done",
    idempotency_key: str | None = None,
    client: LinearClient | None = None,
) -> JSON | None:
    """Move the Linear issue a GitHub pull request event names to ``state``.

    The identifier is looked for in the event's correlation id, then the pull request's head
    branch, title and body. Returns ``None`` when there is none. Undo: move it back.
    """
    pr = event.data.get("pull_request") or {}
    identifier = find_issue_identifier(
        event.correlation_id,
        (pr.get("head") or {}).get("ref"),
        pr.get("title"),
        pr.get("body"),
    )
    if identifier is None:
        return None
    return await move_issue(identifier, state=state, idempotency_key=idempotency_key, client=client)


@close_linked_issue.compensation
async def _reopen_linked(
    event: Event, *args: Any, result: Any = None, client: LinearClient | None = None, **_: Any
) -> JSON:
    if not result:
        return {}
    moved: JSON = await _move_back(result["id"], result=result, client=client)
    return moved
