"""Approvals that check the approver: only an allowed person's press decides.

:func:`request_approval` posts the Approve/Reject buttons; :func:`wait_for_approval`, inside a
durable workflow, waits for a press and accepts it only from an allowed approver::

    message = await wf.step(slack.request_approval, "#eng", "Merge #7?", wf.workflow_id)
    approval = await slack.wait_for_approval(
        wf, wf.workflow_id, channel=message["channel"],
        approvers=slack.Approvers(users={"U0ADA"}, usergroups={"S0LEADS"}),
        timeout=timedelta(days=3),
    )
    if approval.decision == "approved": ...

Anyone else's press is ignored (the wait goes on) and answered with an ephemeral message only
they see. Each press is read once (a durable wait never returns the same event twice), the
user-group lookup is a durable step (its answer is recorded, so a replay decides the same),
and the accepted press's event, with who pressed, is in the workflow's history.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from contexten.events import Event
from contexten.exceptions import WorkflowTimeoutError
from contexten.integrations.client import current_clients
from contexten.integrations.slack.actions import approval_decision
from contexten.integrations.slack.client import SlackClient

if TYPE_CHECKING:
    from contexten.workflows import Workflow

__all__ = ["NOT_ALLOWED_TEXT", "Approval", "Approvers", "wait_for_approval"]

NOT_ALLOWED_TEXT = "You are not one of the approvers of this request: your answer was not counted."
"""What a press by someone not allowed is answered with (ephemerally)."""


@dataclass(frozen=True, slots=True)
class Approvers:
    """Who may answer an approval: any of these (none given: nobody).

    Attributes:
        users: Slack user ids.
        usergroups: Slack user group ids (``S0...``), whose members are looked up when a
            press comes from someone not in ``users``.
        allow: a predicate on the user id (pure: it runs again on replay).
    """

    users: Collection[str] = field(default_factory=frozenset)
    usergroups: Collection[str] = field(default_factory=frozenset)
    allow: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.users, str) or isinstance(self.usergroups, str):
            raise TypeError("users and usergroups take collections of ids, not one string")


@dataclass(frozen=True, slots=True)
class Approval:
    """An accepted answer.

    Attributes:
        decision: ``approved`` or ``rejected``.
        approver: the Slack user id who pressed.
        event: the ``slack.block_actions`` event of the press.
    """

    decision: Literal["approved", "rejected"]
    approver: str
    event: Event


def _answers(request_id: str) -> Callable[[Event], bool]:
    def answers(event: Event) -> bool:
        decision = approval_decision(event)
        return decision is not None and decision[1] == request_id

    return answers


async def _in_usergroups(
    user: str, usergroups: list[str], *, client: SlackClient | None = None
) -> bool:
    """Whether ``user`` belongs to one of ``usergroups`` (a durable step: recorded)."""
    slack = client if client is not None else current_clients().get(SlackClient)
    for group in usergroups:
        if user in await slack.usergroup_members(group):
            return True
    return False


async def _tell_not_allowed(
    channel: str, user: str, text: str, *, client: SlackClient | None = None
) -> dict[str, Any]:
    slack = client if client is not None else current_clients().get(SlackClient)
    return await slack.post_ephemeral(channel, user, text)


async def wait_for_approval(
    wf: Workflow,
    request_id: str,
    *,
    approvers: Approvers,
    channel: str,
    timeout: float | timedelta | None = None,
    not_allowed_text: str = NOT_ALLOWED_TEXT,
) -> Approval:
    """Wait for an allowed approver's press on the approval ``request_id`` (see the module).

    Args:
        wf: the workflow (call this from its code).
        request_id: the id :func:`request_approval` was given.
        approvers: who may answer.
        channel: where the request was posted (others are answered there, ephemerally).
        timeout: give up after this long in all.
        not_allowed_text: the ephemeral answer to others.

    Raises:
        WorkflowTimeoutError: no allowed approver answered in time.
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    deadline = wf.now() + timedelta(seconds=seconds) if seconds is not None else None
    while True:
        left = None
        if deadline is not None:
            left = (deadline - wf.now()).total_seconds()
            if left <= 0:
                raise WorkflowTimeoutError(f"no allowed approver answered {request_id!r}")
        event = await wf.wait_for("slack.block_actions", match=_answers(request_id), timeout=left)
        decision = approval_decision(event)
        assert decision is not None  # _answers matched it
        verdict, _, user = decision
        allowed = bool(user) and (
            user in approvers.users or (approvers.allow is not None and approvers.allow(user))
        )
        if not allowed and user and approvers.usergroups:
            allowed = bool(
                await wf.step(
                    _in_usergroups, user, sorted(approvers.usergroups), name="approver-in-group"
                )
            )
        if allowed:
            return Approval(verdict, user, event)
        if user:
            await wf.step(
                _tell_not_allowed, channel, user, not_allowed_text, name="approver-not-allowed"
            )
