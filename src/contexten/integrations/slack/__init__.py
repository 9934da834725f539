"""Slack: the Web API client and its actions (and, beside them, request verification)."""

from contexten.integrations.slack.actions import (
    add_reaction,
    approval_decision,
    delete_message,
    mark_superseded,
    post_message,
    request_approval,
    update_message,
)
from contexten.integrations.slack.approvals import (
    NOT_ALLOWED_TEXT,
    Approval,
    Approvers,
    wait_for_approval,
)
from contexten.integrations.slack.client import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    SlackAdapter,
    SlackClient,
    approval_blocks,
)

__all__ = [
    "APPROVE_ACTION_ID",
    "NOT_ALLOWED_TEXT",
    "REJECT_ACTION_ID",
    "Approval",
    "Approvers",
    "SlackAdapter",
    "SlackClient",
    "add_reaction",
    "approval_blocks",
    "approval_decision",
    "delete_message",
    "mark_superseded",
    "post_message",
    "request_approval",
    "update_message",
    "wait_for_approval",
]
