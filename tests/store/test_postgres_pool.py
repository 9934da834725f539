"""The PostgreSQL store's pool skips asyncpg's per-release session reset: what that relies on.

Released connections are not sent ``RESET ALL; UNLISTEN *; CLOSE ALL;
pg_advisory_unlock_all()`` (see ``contexten.store.postgres._keep_session``). That is safe
only while (a) a connection released inside a transaction is still rolled back, and (b) the
store's code leaves no session state on pooled connections: no session ``SET``, no
session-level advisory locks, no ``LISTEN`` on the pool. Both are checked here, against the
real server.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from contexten.store.postgres import PostgresEventStore

STORE_SOURCES = Path(__file__).resolve().parents[2] / "src" / "contexten" / "store"


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresEventStore]:
    schema = f"ctx_test_pool_{uuid.uuid4().hex[:12]}"
    # The writer holds one connection for good: with two, the test's acquires share the other.
    opened = PostgresEventStore(postgres_url, schema=schema, pool_size=2)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_a_connection_released_inside_a_transaction_comes_back_rolled_back(
    store: PostgresEventStore,
) -> None:
    pool = store._pool
    assert pool is not None
    table = f'"{store.schema}".scratch'
    await pool.execute(f"CREATE TABLE {table} (n int)")
    conn = await pool.acquire()
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    name = await conn.fetchval("SELECT current_setting('application_name')")
    await conn.execute("BEGIN")
    await conn.execute(f"INSERT INTO {table} VALUES (1)")
    await conn.execute("SET LOCAL application_name = 'leaked'")
    await conn.execute("SELECT pg_advisory_xact_lock(4242)")
    await pool.release(conn)  # never committed: a handler cancelled mid-transaction

    again = await pool.acquire()
    try:
        assert await again.fetchval("SELECT pg_backend_pid()") == pid, "the same connection"
        assert not again.is_in_transaction()
        assert await again.fetchval(f"SELECT count(*) FROM {table}") == 0
        assert await again.fetchval("SELECT current_setting('application_name')") == name
        held = await again.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
        )
        assert held == 0
    finally:
        await pool.release(again)


# SQL that would leave session state on a pooled connection (a string starting with SET that
# is not SET LOCAL, session advisory locks, LISTEN): the pool would no longer clear it.
_SESSION_STATE = re.compile(
    r"""["']\s*SET\s+(?!LOCAL\b)|pg_(try_)?advisory_lock(_shared)?\s*\(|"""
    r"""(execute|fetch\w*)\(\s*f?["']\s*LISTEN\b""",
    re.IGNORECASE,
)


def test_the_store_code_leaves_no_session_state_on_pooled_connections() -> None:
    sources = sorted(STORE_SOURCES.glob("*postgres*.py"))
    assert sources, STORE_SOURCES
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _SESSION_STATE.search(line)
    ]
    assert found == [], "session state on pooled connections needs the pool's reset back"


def test_the_guard_catches_session_state() -> None:
    for sql in (
        '"SET statement_timeout = 0"',
        "conn.execute('LISTEN x')",
        "SELECT pg_advisory_lock(1)",
    ):
        assert _SESSION_STATE.search(sql), sql
    for sql in (
        '"SET LOCAL lock_timeout = 0"',
        '"UPDATE t SET a = 1"',
        "pg_advisory_xact_lock(1)",
        '_log.debug("LISTEN connection failed")',
    ):
        assert not _SESSION_STATE.search(sql), sql
