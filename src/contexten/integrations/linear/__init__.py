"""Linear: the GraphQL client and its actions (and, beside them, webhook verification)."""

from contexten.integrations.linear.actions import (
    add_issue_labels,
    archive_issue,
    assign_issue,
    close_linked_issue,
    create_comment,
    create_issue,
    find_issue_identifier,
    get_issue,
    move_issue,
    remove_issue_labels,
    update_issue,
    workflow_state,
)
from contexten.integrations.linear.client import LinearAdapter, LinearClient

__all__ = [
    "LinearAdapter",
    "LinearClient",
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
