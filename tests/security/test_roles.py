"""The one permission check: roles are ordered, every action has a least role, and an
undeclared action is an error rather than a silent yes or no."""

from __future__ import annotations

import pytest

from contexten.security import ACTIONS, Principal, Role, allowed, required_role

VIEWER = Principal("v1", "grafana", Role.VIEWER)
OPERATOR = Principal("o1", "oncall", Role.OPERATOR)
ADMIN = Principal("a1", "root", Role.ADMIN)


@pytest.mark.parametrize(
    ("action", "viewer", "operator", "admin"),
    [
        ("events:read", True, True, True),
        ("workflows:read", True, True, True),
        ("dlq:read", True, True, True),
        ("metrics:read", True, True, True),
        ("health:read", True, True, True),
        ("dlq:redrive", False, True, True),
        ("dlq:discard", False, True, True),
        ("workflows:cancel", False, True, True),
        ("workflows:redrive", False, True, True),
        ("workflows:migrate", False, True, True),
        ("workflows:fork", False, True, True),
        ("events:replay", False, True, True),
        ("events:publish", False, True, True),
        ("subscriptions:reset", False, True, True),
        ("tokens:manage", False, False, True),
    ],
)
def test_each_role_is_allowed_what_the_issue_says(
    action: str, viewer: bool, operator: bool, admin: bool
) -> None:
    assert allowed(VIEWER, action) is viewer
    assert allowed(OPERATOR, action) is operator
    assert allowed(ADMIN, action) is admin
    assert allowed(None, action) is False


def test_an_undeclared_action_raises_instead_of_answering() -> None:
    with pytest.raises(KeyError, match="unknown action 'dlq:explode'"):
        allowed(ADMIN, "dlq:explode")
    with pytest.raises(KeyError):
        required_role("")


def test_roles_are_ordered_and_parse_by_name() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR
    assert str(Role.ADMIN) == "admin"
    with pytest.raises(ValueError, match="one of viewer, operator, admin"):
        Role.parse("root")
    assert set(ACTIONS.values()) == set(Role)


def test_a_principal_never_carries_the_token() -> None:
    assert VIEWER.to_dict() == {"token_id": "v1", "name": "grafana", "role": "viewer"}
