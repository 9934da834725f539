"""Linear: the GraphQL client and its actions; webhook verification and the predicates over
Linear events (``changed("stateId")``, ``label_added("agent")``) beside them."""

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
from contexten.integrations.linear.lookups import (
    LOOKUP_EVENTS,
    invalidate_lookups,
    lookup_invalidation,
)
from contexten.integrations.linear.predicates import (
    changed,
    label_added,
    label_removed,
    moved_to,
)

__all__ = [
    "LOOKUP_EVENTS",
    "LinearAdapter",
    "LinearClient",
    "add_issue_labels",
    "archive_issue",
    "assign_issue",
    "changed",
    "close_linked_issue",
    "create_comment",
    "create_issue",
    "find_issue_identifier",
    "get_issue",
    "invalidate_lookups",
    "label_added",
    "label_removed",
    "lookup_invalidation",
    "move_issue",
    "moved_to",
    "remove_issue_labels",
    "update_issue",
    "workflow_state",
]
