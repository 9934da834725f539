"""Echo suppression: recognise the webhooks our own actions cause.

When a rule posts a comment, GitHub sends an ``issue_comment.created`` webhook for it; a rule
that reacts to comments would then answer itself, forever. An event is an *echo* when:

1. its actor is our bot (GitHub ``sender.login``, Slack ``bot_id``/``user``, Linear
   ``actor.id``), which is reliable whenever the bot has its own identity; or
2. it is about an object one of our recorded actions just made or changed (the object's id is
   among the fingerprints of an :class:`~contexten.integrations.action.ActionRecord` seen in the
   last ``ttl`` seconds), which covers a bot acting through a person's token.

:class:`EchoDetector` is fed the action records (directly, or as the ``contexten.action.*``
events the App stores, so a restarted process still knows them) and answers :meth:`is_echo`.
The App marks echoes and does not deliver them to handlers unless a handler asks for them.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contexten.events import Event
from contexten.integrations.action import ActionRecord

__all__ = ["BotIdentity", "EchoDetector", "event_actor", "event_fingerprints", "is_echo"]

_GITHUB_OBJECTS = {
    "issue_comment": "comment",
    "pull_request": "pull_request",
    "issues": "issue",
    "check_run": "check_run",
    "pull_request_review_comment": "comment",
}


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who "we" are on each platform.

    Attributes:
        github_logins: our GitHub App / bot logins (``my-app[bot]``).
        slack_user_ids: our bot user ids (``U...``).
        slack_bot_ids: our bot ids (``B...``).
        linear_user_ids: the Linear user our API key acts as.
    """

    github_logins: frozenset[str] = field(default_factory=frozenset)
    slack_user_ids: frozenset[str] = field(default_factory=frozenset)
    slack_bot_ids: frozenset[str] = field(default_factory=frozenset)
    linear_user_ids: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotIdentity:
        """Read ``CONTEXTEN_GITHUB_BOT_LOGIN``, ``CONTEXTEN_SLACK_BOT_USER_ID``,
        ``CONTEXTEN_SLACK_BOT_ID`` and ``CONTEXTEN_LINEAR_BOT_USER_ID`` (comma-separated)."""
        env = os.environ if env is None else env

        def read(name: str) -> frozenset[str]:
            return frozenset(v.strip() for v in env.get(name, "").split(",") if v.strip())

        return cls(
            github_logins=read("CONTEXTEN_GITHUB_BOT_LOGIN"),
            slack_user_ids=read("CONTEXTEN_SLACK_BOT_USER_ID"),
            slack_bot_ids=read("CONTEXTEN_SLACK_BOT_ID"),
            linear_user_ids=read("CONTEXTEN_LINEAR_BOT_USER_ID"),
        )

    def is_ours(self, platform: str, actor: str | None) -> bool:
        """Whether ``actor`` (as :func:`event_actor` reports it) is us on ``platform``."""
        if not actor:
            return False
        if platform == "github":
            return actor in self.github_logins
        if platform == "slack":
            return actor in self.slack_user_ids or actor in self.slack_bot_ids
        if platform == "linear":
            return actor in self.linear_user_ids
        return False


def _platform(event: Event) -> str:
    return event.type.split(".", 1)[0]


def _slack_event(data: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = data.get("event")
    return inner if isinstance(inner, Mapping) else data


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _field(value: Any, key: str) -> str | None:
    return _text(value.get(key)) if isinstance(value, Mapping) else None


def event_actor(event: Event) -> str | None:
    """Who caused ``event``, as the platform names them (login, bot id or user id).

    Always a string or None, whatever the payload holds (Slack interactivity payloads carry
    the user as an object, ``{"id": "U..."}``).
    """
    data = event.data
    platform = _platform(event)
    if platform == "github":
        return _field(data.get("sender"), "login") or event.actor
    if platform == "slack":
        inner = _slack_event(data)
        user = inner.get("user")
        return _text(inner.get("bot_id")) or _text(user) or _field(user, "id") or event.actor
    if platform == "linear":
        return _field(data.get("actor"), "id") or event.actor
    return event.actor


def event_fingerprints(event: Event) -> set[str]:
    """The ids of the objects ``event`` is about, in :class:`ActionRecord` fingerprint form."""
    data = event.data
    platform = _platform(event)
    found: set[str] = set()
    if platform == "github":
        kind = event.type.split(".")[1] if "." in event.type else ""
        subject = data.get(_GITHUB_OBJECTS.get(kind, ""))
        if isinstance(subject, Mapping) and subject.get("node_id"):
            found.add(f"github:{subject['node_id']}")
    elif platform == "linear":
        nested = data.get("data")
        obj: Mapping[str, Any] = nested if isinstance(nested, Mapping) else data
        if obj.get("id"):
            found.add(f"linear:{obj['id']}")
    elif platform == "slack":
        message = _slack_event(data)
        channel = message.get("channel")
        ts = message.get("ts") or (message.get("message") or {}).get("ts")
        if isinstance(channel, str) and ts:
            found.add(f"slack:{channel}:{ts}")
    return found


class EchoDetector:
    """Decides whether an event is an echo of our own action; see the module docstring.

    It is also an :class:`~contexten.integrations.action.ActionRecorder`, so it can be given
    the records directly (the App chains it with its event recorder).

    Args:
        identity: our bot's identities (default: from the environment).
        ttl: seconds a recorded action's fingerprints stay matchable.
        maxsize: fingerprints remembered at most.
        clock: ``time.monotonic`` or a test's replacement.
    """

    def __init__(
        self,
        identity: BotIdentity | None = None,
        *,
        ttl: float = 600.0,
        maxsize: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity if identity is not None else BotIdentity.from_env()
        self.ttl = ttl
        self.maxsize = maxsize
        self._clock = clock
        self._recent: OrderedDict[str, float] = OrderedDict()

    async def record(self, record: ActionRecord) -> None:
        """Remember an action's fingerprints (the ActionRecorder protocol)."""
        self.observe(record)

    def observe(self, record: ActionRecord) -> None:
        """Remember an action's fingerprints."""
        expires = self._clock() + self.ttl
        for fingerprint in record.fingerprints:
            self._recent[fingerprint] = expires
            self._recent.move_to_end(fingerprint)
        while len(self._recent) > self.maxsize:
            self._recent.popitem(last=False)

    def observe_event(self, event: Event) -> None:
        """Remember the fingerprints of a stored ``contexten.action.*`` event."""
        if event.type.startswith("contexten.action."):
            fingerprints = event.data.get("fingerprints") or []
            self.observe(
                ActionRecord(
                    platform=str(event.data.get("platform", "")),
                    action=str(event.data.get("action", "")),
                    fingerprints=tuple(str(f) for f in fingerprints),
                )
            )

    def is_echo(self, event: Event) -> bool:
        """Whether ``event`` was caused by our own action."""
        platform = _platform(event)
        if platform in ("contexten", "codegen"):
            return False  # our own records, and results of work we asked for, are not echoes
        if self.identity.is_ours(platform, event_actor(event)):
            return True
        now = self._clock()
        for fingerprint in event_fingerprints(event):
            expires = self._recent.get(fingerprint)
            if expires is not None and expires >= now:
                return True
        return False


def is_echo(event: Event, detector: EchoDetector) -> bool:
    """Predicate form of :meth:`EchoDetector.is_echo` (for ``where=`` filters)."""
    return detector.is_echo(event)
