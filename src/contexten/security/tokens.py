"""API tokens, event-sourced in the store: create, list, revoke, and check a presented one.

A token looks like ``ctx_3f9a0c1d2e4b_<43 random characters>``: a fixed prefix (so a leaked
token is easy to recognise in a scanner's rules), a public id (12 hex characters, shown by
``contexten tokens list`` and used to revoke it) and 256 random bits. Only its SHA-256 is
stored: a token with that much entropy needs no slow hash, and the store never holds
anything that would let a reader of the store (or of ``GET /api/v1/events``) use it.

Tokens live in the system stream :data:`TOKENS_STREAM` as ``contexten.token.created`` and
``contexten.token.revoked`` events, so they work on every backend, across any number of
processes, with no table of their own; streams starting with ``$`` are never delivered to
handlers. The store is the one place of truth.

Each serving process keeps a :class:`TokenRegistry`: a cache of that stream, refreshed
from the store when it is older than ``refresh_interval`` (1 s by default) at the next
check, so a token revoked in one process is refused by every other within about a second.
Comparison is by :func:`hmac.compare_digest` on the digests.

``CONTEXTEN_ADMIN_TOKEN`` (passed in as ``admin_token``) is an extra admin token that lives
only in the environment: the way in for a deployment that provisions its secrets, and for
the demo.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from contexten.clock import Clock, WallClock
from contexten.events.envelope import Event
from contexten.exceptions import ConfigurationError, TokenNotFound, WrongExpectedVersion
from contexten.security.roles import Principal, Role
from contexten.security.visibility import SECURITY_STREAM_PREFIX
from contexten.store.base import EventStore, RecordedEvent, StreamState

__all__ = [
    "ENV_ADMIN_TOKEN",
    "MIN_ADMIN_TOKEN_LENGTH",
    "TOKENS_STREAM",
    "TOKEN_CREATED",
    "TOKEN_PREFIX",
    "TOKEN_REVOKED",
    "IssuedToken",
    "TokenInfo",
    "TokenRegistry",
    "create_token",
    "ensure_bootstrap_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
    "token_id_of",
]

TOKENS_STREAM: Final = SECURITY_STREAM_PREFIX + "tokens"
TOKEN_CREATED: Final = "contexten.token.created"
TOKEN_REVOKED: Final = "contexten.token.revoked"
TOKEN_PREFIX: Final = "ctx_"
ENV_ADMIN_TOKEN: Final = "CONTEXTEN_ADMIN_TOKEN"
MIN_ADMIN_TOKEN_LENGTH: Final = 16
"""``CONTEXTEN_ADMIN_TOKEN`` must be at least this long (a guessable admin token is worse
than none)."""
ENV_TOKEN_ID: Final = "env"
_ID_HEX: Final = 12
_TOKEN_RE: Final = re.compile(rf"^{TOKEN_PREFIX}([0-9a-f]{{{_ID_HEX}}})_[A-Za-z0-9_\-]{{43}}$")
_NAME_RE: Final = re.compile(r"^[\w.@:+\- ]{1,64}$")
_MAX_PRESENTED: Final = 512
"""Presented credentials longer than this are refused without hashing them."""
_MISS_REFRESH: Final = 0.25
"""An unknown token id refreshes the cache, at most this often (a token created a moment
ago in another process works at once, and random ids cannot make every request read)."""


def hash_token(token: str) -> str:
    """The SHA-256 of ``token``, hex: what the store keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id_of(token: str) -> str | None:
    """The public id inside ``token``, or None when it is not shaped like a Contexten token."""
    if len(token) > _MAX_PRESENTED:
        return None
    match = _TOKEN_RE.match(token)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known about a token, without the token.

    Attributes:
        id: the public id (part of the token; used to list and revoke it).
        name: who or what it is for, as given at creation.
        role: what it may do.
        created_at: when it was created.
        created_by: the name of whoever created it.
        revoked_at: when it was revoked; None while it is active.
    """

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the token is still accepted."""
        return self.revoked_at is None

    @property
    def principal(self) -> Principal:
        """Who a request carrying this token acts as."""
        return Principal(self.id, self.name, self.role)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times in ISO 8601)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created: the only time the token itself is known.

    Attributes:
        info: its id, name and role.
        token: the secret to hand to the client; not in ``repr()``.
    """

    info: TokenInfo
    token: str = field(repr=False)


@dataclass(slots=True)
class _Folded:
    """The fold of :data:`TOKENS_STREAM`: every token's info and digest, by id."""

    tokens: dict[str, TokenInfo] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def apply(self, records: list[RecordedEvent]) -> None:
        for rec in records:
            self.version = rec.version
            data = rec.event.data
            token_id = str(data.get("token_id", ""))
            if rec.event.type == TOKEN_CREATED:
                self.tokens[token_id] = TokenInfo(
                    id=token_id,
                    name=str(data["name"]),
                    role=Role.parse(str(data["role"])),
                    created_at=rec.event.time,
                    created_by=str(data.get("created_by", "")),
                )
                self.digests[token_id] = str(data["sha256"])
            elif rec.event.type == TOKEN_REVOKED and token_id in self.tokens:
                info = self.tokens[token_id]
                if info.active:
                    self.tokens[token_id] = replace(info, revoked_at=rec.event.time)


async def _fold(store: EventStore) -> _Folded:
    folded = _Folded()
    folded.apply(await store.read_stream(TOKENS_STREAM))
    return folded


def _check_name(name: str) -> str:
    name = name.strip()
    if not _NAME_RE.match(name):
        raise ConfigurationError(
            "a token name is 1 to 64 letters, digits, spaces or . @ : + - _ "
            f"(got {len(name)} characters)"
        )
    return name


async def create_token(
    store: EventStore,
    *,
    name: str,
    role: Role | str,
    created_by: Principal | None = None,
    clock: Clock | None = None,
) -> IssuedToken:
    """Create a token, store its digest, and return it (the only time it is shown).

    Args:
        store: an open event store.
        name: who or what the token is for (shown by ``tokens list`` and in audit events).
        role: ``viewer``, ``operator`` or ``admin``.
        created_by: who creates it (recorded; default: ``"cli"``).
        clock: where the creation time comes from.

    Raises:
        ConfigurationError: a bad name.
        ValueError: an unknown role.
    """
    return await _create(store, name, role, created_by, clock, StreamState.ANY)


async def _create(
    store: EventStore,
    name: str,
    role: Role | str,
    created_by: Principal | None,
    clock: Clock | None,
    expected: StreamState,
) -> IssuedToken:
    name = _check_name(name)
    role = role if isinstance(role, Role) else Role.parse(role)
    token_id = secrets.token_hex(_ID_HEX // 2)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    creator = created_by.name if created_by is not None else "cli"
    event = Event(
        type=TOKEN_CREATED,
        subject=token_id,
        time=(clock or WallClock()).now(),
        actor=creator,
        data={
            "token_id": token_id,
            "name": name,
            "role": str(role),
            "sha256": hash_token(token),
            "created_by": creator,
        },
    )
    await store.append(TOKENS_STREAM, [event], expected_version=expected)
    info = TokenInfo(token_id, name, role, event.time, creator)
    return IssuedToken(info, token)


async def ensure_bootstrap_token(
    store: EventStore, *, name: str = "bootstrap admin", clock: Clock | None = None
) -> IssuedToken | None:
    """Create an admin token if the store has never held one; else None.

    Safe to race: the token is appended only while the token stream does not exist, so of
    several processes starting together on one store exactly one creates it.
    """
    if await store.stream_version(TOKENS_STREAM) > 0:
        return None
    creator = Principal("bootstrap", "contexten serve (first start)", Role.ADMIN)
    try:
        return await _create(store, name, Role.ADMIN, creator, clock, StreamState.NO_STREAM)
    except WrongExpectedVersion:
        return None  # another process made the first token


async def list_tokens(store: EventStore, *, include_revoked: bool = True) -> list[TokenInfo]:
    """Every token (never the token itself), oldest first."""
    folded = await _fold(store)
    return [t for t in folded.tokens.values() if include_revoked or t.active]


async def revoke_token(
    store: EventStore,
    token_id: str,
    *,
    revoked_by: Principal | None = None,
    clock: Clock | None = None,
) -> bool:
    """Revoke the token with public id ``token_id``; False if it was already revoked.

    Every process refuses it within its registry's refresh interval.

    Raises:
        TokenNotFound: no token has that id.
    """
    while True:  # a conditional append: retried only when someone else wrote meanwhile
        folded = await _fold(store)
        info = folded.tokens.get(token_id)
        if info is None:
            raise TokenNotFound(f"no token with id {token_id!r}")
        if not info.active:
            return False
        by = revoked_by.name if revoked_by is not None else "cli"
        event = Event(
            type=TOKEN_REVOKED,
            subject=token_id,
            time=(clock or WallClock()).now(),
            actor=by,
            data={"token_id": token_id, "revoked_by": by},
        )
        try:
            await store.append(TOKENS_STREAM, [event], expected_version=folded.version)
        except WrongExpectedVersion:
            continue
        return True


class TokenRegistry:
    """Checks presented tokens against the store's, through a cache refreshed every second.

    Args:
        store: the event store that holds the tokens (open before the first check).
        admin_token: ``CONTEXTEN_ADMIN_TOKEN``, an admin token that lives only in the
            environment (None: none). At least :data:`MIN_ADMIN_TOKEN_LENGTH` characters.
        refresh_interval: seconds a cached view of the tokens is trusted; a revocation made
            by another process takes effect here within this long.
        clock: where durations are measured.

    Raises:
        ConfigurationError: ``admin_token`` is too short.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        admin_token: str | None = None,
        refresh_interval: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if admin_token is not None and len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ConfigurationError(
                f"{ENV_ADMIN_TOKEN} must be at least {MIN_ADMIN_TOKEN_LENGTH} characters "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        self._store = store
        self._admin_digest = hash_token(admin_token) if admin_token else None
        self._refresh_interval = refresh_interval
        self._clock = clock or WallClock()
        self._folded = _Folded()
        self._refreshed_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def has_admin_token(self) -> bool:
        """Whether an environment admin token is configured."""
        return self._admin_digest is not None

    async def refresh(self) -> None:
        """Read the token events appended since the last refresh.

        Raises:
            StoreUnavailable: the store cannot be read (checks then fail closed).
        """
        async with self._lock:
            records = await self._store.read_stream(
                TOKENS_STREAM, from_version=self._folded.version + 1
            )
            self._folded.apply(records)
            self._refreshed_at = self._clock.monotonic()

    def _age(self) -> float:
        if self._refreshed_at is None:
            return float("inf")
        return self._clock.monotonic() - self._refreshed_at

    async def authenticate(self, presented: str) -> Principal | None:
        """Who ``presented`` identifies, or None for anything that is not an active token.

        Raises:
            StoreUnavailable: the cache is stale and the store cannot be read.
        """
        digest = hash_token(presented) if len(presented) <= _MAX_PRESENTED else None
        if digest is None:
            return None
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Principal(ENV_TOKEN_ID, ENV_ADMIN_TOKEN, Role.ADMIN)
        token_id = token_id_of(presented)
        if token_id is None:
            return None
        age = self._age()
        if age >= self._refresh_interval or (
            token_id not in self._folded.digests and age >= _MISS_REFRESH
        ):
            await self.refresh()
        stored = self._folded.digests.get(token_id)
        info = self._folded.tokens.get(token_id)
        if stored is None or info is None or not hmac.compare_digest(digest, stored):
            return None
        return info.principal if info.active else None
