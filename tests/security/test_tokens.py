"""Tokens in the store: created once and shown once, stored as a hash, listed and revoked
by public id, checked in constant time, on every backend."""

from __future__ import annotations

import asyncio
import json

import pytest

from contexten.exceptions import ConfigurationError, TokenNotFound
from contexten.security import (
    TOKENS_STREAM,
    Principal,
    Role,
    TokenRegistry,
    create_token,
    ensure_bootstrap_token,
    hash_token,
    list_tokens,
    revoke_token,
    token_id_of,
)
from contexten.store import EventStore, create_store


async def test_a_token_is_stored_only_as_its_hash(store: EventStore) -> None:
    issued = await create_token(store, name="grafana", role="viewer")
    assert issued.token.startswith(f"ctx_{issued.info.id}_")
    assert token_id_of(issued.token) == issued.info.id
    assert issued.token not in repr(issued)
    stored = await store.read_stream(TOKENS_STREAM)
    assert len(stored) == 1
    text = json.dumps(stored[0].event.data)
    assert issued.token not in text
    assert issued.token.rpartition("_")[2] not in text  # not even the secret part
    assert stored[0].event.data["sha256"] == hash_token(issued.token)


async def test_create_list_revoke(store: EventStore) -> None:
    admin = Principal("a", "alice", Role.ADMIN)
    viewer = await create_token(store, name="grafana", role=Role.VIEWER, created_by=admin)
    operator = await create_token(store, name="oncall", role="operator")
    listed = await list_tokens(store)
    assert [(t.id, t.name, t.role, t.created_by) for t in listed] == [
        (viewer.info.id, "grafana", Role.VIEWER, "alice"),
        (operator.info.id, "oncall", Role.OPERATOR, "cli"),
    ]
    assert await revoke_token(store, viewer.info.id, revoked_by=admin) is True
    assert await revoke_token(store, viewer.info.id) is False  # already revoked
    with pytest.raises(TokenNotFound):
        await revoke_token(store, "000000000000")
    active = await list_tokens(store, include_revoked=False)
    assert [t.id for t in active] == [operator.info.id]
    revoked = next(t for t in await list_tokens(store) if t.id == viewer.info.id)
    assert not revoked.active
    assert revoked.to_dict()["revoked_at"] is not None


@pytest.mark.parametrize("name", ["", " ", "x" * 65, "new\nline", "esc\x1b[2J"])
async def test_a_bad_name_or_role_stores_nothing(store: EventStore, name: str) -> None:
    with pytest.raises(ConfigurationError, match="token name"):
        await create_token(store, name=name, role="viewer")
    with pytest.raises(ValueError, match="unknown role"):
        await create_token(store, name="ok", role="superuser")
    assert await store.stream_version(TOKENS_STREAM) == 0


async def test_the_registry_accepts_active_tokens_and_nothing_else(store: EventStore) -> None:
    issued = await create_token(store, name="oncall", role="operator")
    registry = TokenRegistry(store, refresh_interval=0.0)
    principal = await registry.authenticate(issued.token)
    assert principal == Principal(issued.info.id, "oncall", Role.OPERATOR)
    forged = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    assert await registry.authenticate(forged) is None  # same id, wrong secret
    assert await registry.authenticate("") is None
    assert await registry.authenticate("x" * 10_000) is None
    assert await registry.authenticate("ctx_zzzzzzzzzzzz_" + "a" * 43) is None
    await revoke_token(store, issued.info.id)
    assert await registry.authenticate(issued.token) is None


async def test_the_environment_admin_token(store: EventStore) -> None:
    registry = TokenRegistry(store, admin_token="an-admin-token-from-env")
    assert registry.has_admin_token
    principal = await registry.authenticate("an-admin-token-from-env")
    assert principal is not None
    assert (principal.token_id, principal.role) == ("env", Role.ADMIN)
    assert await registry.authenticate("an-admin-token-from-en") is None
    with pytest.raises(ConfigurationError, match="at least 16"):
        TokenRegistry(store, admin_token="short")


async def test_a_cached_registry_sees_another_stores_revocation_after_its_interval(
    shared_url: str,
) -> None:
    """Two store objects on one store (what two processes have): the registry's cache is
    trusted for ``refresh_interval``, then it reads the revocation."""
    async with create_store(shared_url) as mine, create_store(shared_url) as theirs:
        issued = await create_token(theirs, name="ci", role="viewer")
        registry = TokenRegistry(mine, refresh_interval=0.3)
        assert await registry.authenticate(issued.token) is not None  # unknown id: read
        await revoke_token(theirs, issued.info.id)
        async with asyncio.timeout(10):
            while await registry.authenticate(issued.token) is not None:  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.05)


async def test_the_first_token_is_made_once_even_by_racing_starts(store_url: str) -> None:
    stores = [create_store(store_url) for _ in range(1 if store_url == "memory://" else 4)]
    for s in stores:
        await s.open()
    try:
        target = stores * 4 if len(stores) == 1 else stores
        made = await asyncio.gather(*(ensure_bootstrap_token(s) for s in target))
        issued = [m for m in made if m is not None]
        assert len(issued) == 1
        assert issued[0].info.role is Role.ADMIN
        assert await ensure_bootstrap_token(stores[0]) is None
        assert len(await list_tokens(stores[0])) == 1
        await revoke_token(stores[0], issued[0].info.id)
        assert await ensure_bootstrap_token(stores[0]) is None  # never again, even then
    finally:
        for s in stores:
            await s.close()
