"""GitHub actions: mutating calls with their compensations, usable as workflow steps.

Each action takes ``client=`` (default: the registry's GitHub client) and the mutating ones
``idempotency_key=``; each returns GitHub's JSON. Compensations are ``action.undo`` and follow
the convention in :mod:`contexten.integrations.action`. Where an undo needs what was there
before (an edited comment's old body, a pull request's old title), the action returns GitHub's
JSON with one extra key, ``"contexten_previous"``, holding it.
"""

from __future__ import annotations

from typing import Any

from contexten.exceptions import PlatformNotFound
from contexten.integrations.action import action
from contexten.integrations.client import current_clients
from contexten.integrations.github.client import GitHubClient

__all__ = [
    "add_labels",
    "close_issue",
    "close_pull_request",
    "create_check_run",
    "create_commit_status",
    "create_issue_comment",
    "create_pull_request",
    "delete_issue_comment",
    "get_pull_request",
    "list_pull_request_files",
    "merge_pull_request",
    "remove_label",
    "reopen_issue",
    "reopen_pull_request",
    "request_reviewers",
    "update_check_run",
    "update_issue_comment",
    "update_pull_request",
]

JSON = dict[str, Any]


def _client(client: GitHubClient | None) -> GitHubClient:
    return client if client is not None else current_clients().get(GitHubClient)


def _fingerprint(result: Any) -> list[str]:
    if isinstance(result, dict) and result.get("node_id"):
        return [f"github:{result['node_id']}"]
    return []


def _result(result: Any) -> JSON:
    if not isinstance(result, dict):
        raise ValueError("this compensation needs the step's result (a GitHub object)")
    return result


# -- comments -----------------------------------------------------------------------------------


@action(platform="github", fingerprint=_fingerprint)
async def create_issue_comment(
    repo: str,
    number: int,
    body: str,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Comment on an issue or pull request. Undo: delete the comment."""
    return await _client(client).create_issue_comment(
        repo, number, body, idempotency_key=idempotency_key
    )


@create_issue_comment.compensation
async def _delete_created_comment(
    repo: str, *args: Any, result: Any = None, client: GitHubClient | None = None, **_: Any
) -> None:
    await _client(client).delete_issue_comment(repo, _result(result)["id"])


@action(platform="github", fingerprint=_fingerprint)
async def update_issue_comment(
    repo: str,
    comment_id: int,
    body: str,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Replace a comment's body. Undo: put the previous body back."""
    gh = _client(client)
    previous = await gh.get_issue_comment(repo, comment_id)
    result = await gh.update_issue_comment(repo, comment_id, body)
    return {**result, "contexten_previous": {"body": previous.get("body", "")}}


@update_issue_comment.compensation
async def _restore_comment(
    repo: str,
    comment_id: int,
    *args: Any,
    result: Any = None,
    client: GitHubClient | None = None,
    **_: Any,
) -> JSON:
    return await _client(client).update_issue_comment(
        repo, comment_id, _result(result)["contexten_previous"]["body"]
    )


@action(platform="github", fingerprint=_fingerprint)
async def delete_issue_comment(
    repo: str,
    comment_id: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Delete a comment (already gone is fine); returns the comment as it was.

    Undo: post its body again (as a new comment: GitHub cannot restore the old one).
    """
    gh = _client(client)
    try:
        previous = await gh.get_issue_comment(repo, comment_id)
    except PlatformNotFound:
        previous = {"id": comment_id}
    await gh.delete_issue_comment(repo, comment_id)
    return previous


@delete_issue_comment.compensation
async def _repost_comment(
    repo: str,
    comment_id: int,
    *args: Any,
    result: Any = None,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
    **_: Any,
) -> JSON | None:
    previous = _result(result)
    if not previous.get("body") or not previous.get("issue_url"):
        return None
    number = int(str(previous["issue_url"]).rstrip("/").rsplit("/", 1)[-1])
    return await _client(client).create_issue_comment(
        repo, number, previous["body"], idempotency_key=idempotency_key
    )


# -- labels -------------------------------------------------------------------------------------


@action(platform="github")
async def add_labels(
    repo: str,
    number: int,
    labels: list[str],
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> list[JSON]:
    """Add labels (adding one already there is harmless). Undo: remove those labels."""
    return await _client(client).add_labels(repo, number, labels)


@add_labels.compensation
async def _remove_added_labels(
    repo: str,
    number: int,
    labels: list[str],
    *args: Any,
    client: GitHubClient | None = None,
    **_: Any,
) -> None:
    gh = _client(client)
    for label in labels:
        await gh.remove_label(repo, number, label)


@action(platform="github")
async def remove_label(
    repo: str,
    number: int,
    label: str,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> list[JSON]:
    """Remove a label (one not there is fine). Undo: add it back."""
    return await _client(client).remove_label(repo, number, label)


@remove_label.compensation
async def _readd_label(
    repo: str, number: int, label: str, *args: Any, client: GitHubClient | None = None, **_: Any
) -> list[JSON]:
    return await _client(client).add_labels(repo, number, [label])


# -- issues and pull requests -------------------------------------------------------------------


@action(platform="github", fingerprint=_fingerprint)
async def close_issue(
    repo: str,
    number: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Close an issue. Undo: reopen it."""
    return await _client(client).set_issue_state(repo, number, "closed")


@close_issue.compensation
async def _reopen_closed_issue(
    repo: str, number: int, *args: Any, client: GitHubClient | None = None, **_: Any
) -> JSON:
    return await _client(client).set_issue_state(repo, number, "open")


@action(platform="github", fingerprint=_fingerprint)
async def reopen_issue(
    repo: str,
    number: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Reopen an issue. Undo: close it."""
    return await _client(client).set_issue_state(repo, number, "open")


@reopen_issue.compensation
async def _close_reopened_issue(
    repo: str, number: int, *args: Any, client: GitHubClient | None = None, **_: Any
) -> JSON:
    return await _client(client).set_issue_state(repo, number, "closed")


@action(platform="github", fingerprint=_fingerprint)
async def create_pull_request(
    repo: str,
    *,
    title: str,
    head: str,
    base: str,
    body: str = "",
    draft: bool = False,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Open a pull request (``draft=True`` for a draft). Undo: close it."""
    return await _client(client).create_pull_request(
        repo,
        title=title,
        head=head,
        base=base,
        body=body,
        draft=draft,
        idempotency_key=idempotency_key,
    )


@create_pull_request.compensation
async def _close_created_pull_request(
    repo: str, *args: Any, result: Any = None, client: GitHubClient | None = None, **_: Any
) -> JSON:
    return await _client(client).ensure_pull_request_closed(repo, _result(result)["number"])


@action(platform="github", fingerprint=_fingerprint)
async def close_pull_request(
    repo: str,
    number: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Close a pull request without merging. Undo: reopen it."""
    return await _client(client).ensure_pull_request_closed(repo, number)


@close_pull_request.compensation
async def _reopen_closed_pull_request(
    repo: str, number: int, *args: Any, client: GitHubClient | None = None, **_: Any
) -> JSON:
    return await _client(client).update_pull_request(repo, number, state="open")


@action(platform="github", fingerprint=_fingerprint)
async def reopen_pull_request(
    repo: str,
    number: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Reopen a closed pull request. Undo: close it."""
    return await _client(client).update_pull_request(repo, number, state="open")


@reopen_pull_request.compensation
async def _close_reopened_pull_request(
    repo: str, number: int, *args: Any, client: GitHubClient | None = None, **_: Any
) -> JSON:
    return await _client(client).ensure_pull_request_closed(repo, number)


@action(platform="github", fingerprint=_fingerprint)
async def update_pull_request(
    repo: str,
    number: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
    **fields: Any,
) -> JSON:
    """Change a pull request's ``title``, ``body``, ``state`` or ``base``.

    Undo: put the previous values back.
    """
    gh = _client(client)
    before = await gh.get_pull_request(repo, number)
    previous = {
        k: (before.get(k) if k != "base" else before.get("base", {}).get("ref")) for k in fields
    }
    if "body" in previous and previous["body"] is None:
        # GitHub answers ``null`` for an empty description but takes only a string back.
        previous["body"] = ""
    result = await gh.update_pull_request(repo, number, **fields)
    return {**result, "contexten_previous": previous}


@update_pull_request.compensation
async def _restore_pull_request(
    repo: str,
    number: int,
    *args: Any,
    result: Any = None,
    client: GitHubClient | None = None,
    **_: Any,
) -> JSON:
    previous = dict(_result(result)["contexten_previous"])
    if "body" in previous and previous["body"] is None:
        previous["body"] = ""  # a step recorded before the null was mapped at the source
    return await _client(client).update_pull_request(repo, number, **previous)


@action(platform="github", fingerprint=_fingerprint)
async def merge_pull_request(
    repo: str,
    number: int,
    *,
    merge_method: str = "squash",
    sha: str | None = None,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Merge a pull request. It cannot be undone (``merge_pull_request.undo`` is ``None``);
    make it a saga's last step."""
    gh = _client(client)
    current = await gh.get_pull_request(repo, number)
    if current.get("merged"):
        # Already merged (by an earlier attempt of this step, or by someone else).
        return {"sha": current.get("merge_commit_sha"), "merged": True, "message": "already merged"}
    return await gh.merge_pull_request(repo, number, merge_method=merge_method, sha=sha)


@action(platform="github", fingerprint=_fingerprint)
async def request_reviewers(
    repo: str,
    number: int,
    reviewers: list[str] | None = None,
    team_reviewers: list[str] | None = None,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Request reviews. Undo: withdraw those requests."""
    return await _client(client).request_reviewers(repo, number, reviewers, team_reviewers)


@request_reviewers.compensation
async def _withdraw_review_requests(
    repo: str,
    number: int,
    reviewers: list[str] | None = None,
    team_reviewers: list[str] | None = None,
    *args: Any,
    client: GitHubClient | None = None,
    **_: Any,
) -> JSON:
    return await _client(client).remove_requested_reviewers(repo, number, reviewers, team_reviewers)


# -- statuses and checks ------------------------------------------------------------------------


@action(platform="github")
async def create_commit_status(
    repo: str,
    sha: str,
    state: str,
    *,
    context: str = "contexten",
    description: str | None = None,
    target_url: str | None = None,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
) -> JSON:
    """Set a commit status. Undo: set the same context to ``error`` ("rolled back")."""
    return await _client(client).create_commit_status(
        repo, sha, state, context=context, description=description, target_url=target_url
    )


@create_commit_status.compensation
async def _error_commit_status(
    repo: str,
    sha: str,
    *args: Any,
    context: str = "contexten",
    client: GitHubClient | None = None,
    **_: Any,
) -> JSON:
    return await _client(client).create_commit_status(
        repo, sha, "error", context=context, description="Rolled back by Contexten"
    )


@action(platform="github", fingerprint=_fingerprint)
async def create_check_run(
    repo: str,
    *,
    name: str,
    head_sha: str,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
    **fields: Any,
) -> JSON:
    """Create a check run (status, conclusion, output... as keywords).

    Undo: complete it as ``cancelled``.
    """
    return await _client(client).create_check_run(
        repo, name=name, head_sha=head_sha, idempotency_key=idempotency_key, **fields
    )


@action(platform="github", fingerprint=_fingerprint)
async def update_check_run(
    repo: str,
    check_run_id: int,
    *,
    idempotency_key: str | None = None,
    client: GitHubClient | None = None,
    **fields: Any,
) -> JSON:
    """Update a check run. Undo: complete it as ``cancelled``."""
    return await _client(client).update_check_run(repo, check_run_id, **fields)


async def _cancel_check_run(
    repo: str, *args: Any, result: Any = None, client: GitHubClient | None = None, **_: Any
) -> JSON:
    return await _client(client).update_check_run(
        repo, _result(result)["id"], status="completed", conclusion="cancelled"
    )


create_check_run.compensation(_cancel_check_run)
update_check_run.compensation(_cancel_check_run)


# -- reads --------------------------------------------------------------------------------------


async def get_pull_request(repo: str, number: int, *, client: GitHubClient | None = None) -> JSON:
    """One pull request."""
    return await _client(client).get_pull_request(repo, number)


async def list_pull_request_files(
    repo: str, number: int, *, client: GitHubClient | None = None
) -> list[JSON]:
    """Every file a pull request changes."""
    return await _client(client).list_pull_request_files(repo, number)
