"""Roles, actions and the ONE permission check every route, page and command asks.

Three roles, each allowed what the one below it is allowed and more::

    viewer    read events, workflows, schedules, dead letters, health details, metrics, docs
    operator  also redrive and discard dead letters, cancel and redrive workflows, replay,
              pause, resume, trigger and backfill schedules
    admin     also create, list and revoke tokens

A route does not test roles itself: it names the *action* it performs (``"events:read"``,
``"dlq:redrive"``...) and asks :func:`allowed`, the way datasette's pages ask one permission
check. :data:`ACTIONS` maps each action to the least role that may perform it; an action
missing from it is a programming error (:func:`allowed` raises rather than guessing).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["ACTIONS", "Principal", "Role", "allowed", "required_role"]


class Role(enum.IntEnum):
    """What a token may do; ordered, so ``Role.ADMIN >= Role.OPERATOR``."""

    VIEWER = 1
    """Read everything the API shows."""
    OPERATOR = 2
    """Also act on what runs: redrive, discard, cancel, replay."""
    ADMIN = 3
    """Also manage tokens."""

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Role:
        """The role called ``name`` (``"viewer"``, ``"operator"``, ``"admin"``).

        Raises:
            ValueError: no role has that name.
        """
        try:
            return cls[name.strip().upper()]
        except KeyError:
            names = ", ".join(str(r) for r in cls)
            raise ValueError(f"unknown role {name!r}; one of {names}") from None


ACTIONS: Final[Mapping[str, Role]] = MappingProxyType(
    {
        "events:read": Role.VIEWER,
        "workflows:read": Role.VIEWER,
        "dlq:read": Role.VIEWER,
        "health:read": Role.VIEWER,
        "metrics:read": Role.VIEWER,
        "api:describe": Role.VIEWER,
        "dlq:redrive": Role.OPERATOR,
        "dlq:discard": Role.OPERATOR,
        "workflows:cancel": Role.OPERATOR,
        "workflows:redrive": Role.OPERATOR,
        "events:replay": Role.OPERATOR,
        "events:publish": Role.OPERATOR,
        "subscriptions:reset": Role.OPERATOR,
        "workflows:migrate": Role.OPERATOR,
        "workflows:fork": Role.OPERATOR,
        "schedules:read": Role.VIEWER,
        "schedules:pause": Role.OPERATOR,
        "schedules:resume": Role.OPERATOR,
        "schedules:trigger": Role.OPERATOR,
        "schedules:backfill": Role.OPERATOR,
        "tokens:manage": Role.ADMIN,
        "audit:read": Role.ADMIN,
        "store:prune": Role.OPERATOR,
    }
)
"""Every action, and the least role allowed to perform it."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request (or a command) acts as: a token's public id, name and role.

    Never holds the token itself, so it can be logged and recorded in audit events.

    Attributes:
        token_id: the token's public id (``"env"`` for ``CONTEXTEN_ADMIN_TOKEN``, ``"cli"``
            for someone with direct access to the store).
        name: the name the token was created with.
        role: what it may do.
    """

    token_id: str
    name: str
    role: Role

    def to_dict(self) -> dict[str, str]:
        """The principal as audit events record it."""
        return {"token_id": self.token_id, "name": self.name, "role": str(self.role)}


def required_role(action: str) -> Role:
    """The least role allowed to perform ``action``.

    Raises:
        KeyError: ``action`` is not in :data:`ACTIONS` (a route named an action nobody
            declared: fail loudly instead of letting it through).
    """
    try:
        return ACTIONS[action]
    except KeyError:
        raise KeyError(
            f"unknown action {action!r}: declare it in contexten.security.ACTIONS"
        ) from None


def allowed(principal: Principal | None, action: str) -> bool:
    """Whether ``principal`` may perform ``action`` (None: nobody authenticated: never).

    Raises:
        KeyError: ``action`` is unknown (see :func:`required_role`).
    """
    needed = required_role(action)
    return principal is not None and principal.role >= needed
