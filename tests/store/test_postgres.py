"""The PostgreSQL store: the conformance suite, plus multi-process, LISTEN/NOTIFY and failures.

Every test uses throwaway schemas with random names (dropped afterwards), so test runs on the
same server do not see each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contexten.events import Event
from contexten.exceptions import (
    ConfigurationError,
    InvalidEvent,
    SchemaVersionError,
    StoreCorrupted,
    StoreUnavailable,
    WrongExpectedVersion,
)
from contexten.store import Append, AppendResult, EventStore, StreamInfo, create_store
from contexten.store._postgres_schema import MIGRATIONS, Migration, translate_error
from contexten.store.postgres import PostgresEventStore, parse_postgres_url
from contexten.testing.conformance.store import EventStoreConformance

HANG_GUARD = 60.0


def _event(**data: object) -> Event:
    return Event(type="test.happened", source="tests", data=data)


class Schemas:
    """Hands out unique schema names for one test and drops them all afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = uuid.uuid4().hex[:12]
        self.names: set[str] = set()

    def new(self, label: str = "") -> str:
        digest = hashlib.sha256(label.encode()).hexdigest()[:8] if label else uuid.uuid4().hex[:8]
        name = f"ctx_test_{self.token}_{digest}"
        self.names.add(name)
        return name

    def store(self, schema: str | None = None, **options: Any) -> PostgresEventStore:
        return PostgresEventStore(self.url, schema=schema or self.new(), **options)

    async def drop(self) -> None:
        if not self.names:
            return
        conn = await asyncpg.connect(self.url)
        try:
            for name in sorted(self.names):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def schemas(postgres_url: str) -> AsyncIterator[Schemas]:
    made = Schemas(postgres_url)
    try:
        yield made
    finally:
        await made.drop()


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for looking behind the store's back."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.postgres
class TestPostgresEventStore(EventStoreConformance):
    supports_reopen = True
    stateful_examples = 25

    @pytest.fixture(autouse=True)
    def _use_schemas(self, schemas: Schemas) -> None:
        self.schemas = schemas

    def make_store(self, directory: Path) -> EventStore:
        # The same directory maps to the same schema, so a store made again reopens it.
        return self.schemas.store(self.schemas.new(str(directory)))


# -- URLs and configuration (no server needed) --------------------------------------------------


def test_url_options_and_pass_through() -> None:
    s = parse_postgres_url(
        "postgresql://app:s3cret@db.example:6543/events?schema=orders&pool_size=20&pool_min=2"
        "&command_timeout=5&connect_timeout=2.5&sslmode=disable"
    )
    assert (s.schema, s.pool_size, s.pool_min) == ("orders", 20, 2)
    assert (s.command_timeout, s.connect_timeout) == (5.0, 2.5)
    assert s.dsn == "postgresql://app:s3cret@db.example:6543/events?sslmode=disable"
    assert s.where == "postgresql://app@db.example:6543/events (schema orders)"
    defaults = parse_postgres_url("postgres://localhost/db")
    assert (defaults.schema, defaults.pool_size, defaults.pool_min) == ("contexten", 10, 1)
    assert defaults.dsn == "postgres://localhost/db"


def test_constructor_arguments_override_the_url() -> None:
    store = PostgresEventStore("postgresql://h/db?schema=a&pool_size=3", schema="b", pool_size=7)
    assert (store.schema, store.settings.pool_size) == ("b", 7)
    assert "s3cret" not in repr(PostgresEventStore("postgresql://u:s3cret@h/db"))


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_create_store_picks_postgres(scheme: str) -> None:
    store = create_store(f"{scheme}://localhost/db?schema=x")
    assert isinstance(store, PostgresEventStore)
    assert store.schema == "x"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db", "not a PostgreSQL URL"),
        ("postgresql://h/db?pool_size=many", "must be a whole number"),
        ("postgresql://h/db?pool_size=1", "pool_size >= 2"),
        ("postgresql://h/db?pool_size=2&pool_min=3", "pool_min <= pool_size"),
        ("postgresql://h/db?command_timeout=0", "must be > 0"),
        ("postgresql://h/db?schema=1abc", "plain identifier"),
        ('postgresql://h/db?schema=a"b', "plain identifier"),
        ("postgresql://h/db?schema=" + "x" * 51, "at most 50"),
    ],
)
def test_bad_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PostgresEventStore(url)


async def test_unreachable_server_is_unavailable() -> None:
    store = PostgresEventStore(
        "postgresql://postgres:s3cret@127.0.0.1:1/test?schema=nothing&connect_timeout=5"
    )
    with pytest.raises(StoreUnavailable, match=r"cannot reach .*127\.0\.0\.1:1") as caught:
        await store.open()
    assert "s3cret" not in str(caught.value)
    assert "is the server running" in str(caught.value)
    with pytest.raises(StoreUnavailable):  # and again: nothing half-open was left behind
        await store.open()


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (ConnectionRefusedError(111, "Connection refused"), StoreUnavailable, "cannot reach"),
        (TimeoutError(), StoreUnavailable, "reading timed out"),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), StoreUnavailable, "starting"),
        (asyncpg.exceptions.DiskFullError("no space"), StoreUnavailable, "no space"),
        (asyncpg.exceptions.InsufficientPrivilegeError("denied"), StoreUnavailable, "grant"),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), StoreUnavailable, "gone"),
        (asyncpg.exceptions.InterfaceError("pool is closing"), StoreUnavailable, "closing"),
        (asyncpg.exceptions.DataCorruptedError("bad page"), StoreCorrupted, "damaged"),
        (StoreCorrupted("as is"), StoreCorrupted, "as is"),
    ],
)
def test_driver_errors_are_translated(error: BaseException, kind: type, message: str) -> None:
    translated = translate_error(error, "postgresql://h/db (schema s)", "reading")
    assert type(translated) is kind
    assert message in str(translated)


@pytest.mark.postgres
async def test_missing_database_is_unavailable(postgres_url: str) -> None:
    url = postgres_url.rpartition("/")[0] + f"/no_such_db_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await PostgresEventStore(url).open()


# -- the schema --------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_open_creates_the_schema(schemas: Schemas, admin: asyncpg.Connection) -> None:
    async with schemas.store() as store:
        await store.append("s", [_event()])
        schema = store.schema
    tables = await admin.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", schema
    )
    assert [t[0] for t in tables] == [
        "cache",
        "checkpoints",
        "dedup",
        "events",
        "log_head",
        "partitions",
        "schema_version",
        "slots",
        "streams",
        "workers",
    ]
    assert await admin.fetchval(f'SELECT version FROM "{schema}".schema_version') == len(MIGRATIONS)
    assert await admin.fetchval(f'SELECT position FROM "{schema}".log_head') == 1


@pytest.mark.postgres
async def test_newer_schema_version_is_refused(schemas: Schemas, admin: asyncpg.Connection) -> None:
    schema = schemas.new()
    async with schemas.store(schema) as store:
        await store.append("s", [_event()])
    await admin.execute(f'UPDATE "{schema}".schema_version SET version = 99')
    with pytest.raises(SchemaVersionError, match="schema version 99, newer than"):
        await schemas.store(schema).open()


@pytest.mark.postgres
async def test_foreign_tables_are_refused(schemas: Schemas, admin: asyncpg.Connection) -> None:
    schema = schemas.new()
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.execute(f'CREATE TABLE "{schema}".invoices (id int)')
    with pytest.raises(StoreCorrupted, match="invoices"):
        await schemas.store(schema).open()
    assert await admin.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1", schema) == 1


class _V2Store(PostgresEventStore):
    _migrations: ClassVar[tuple[Migration, ...]] = (
        *MIGRATIONS,
        ("CREATE TABLE {s}.extra (x int)", "INSERT INTO {s}.extra VALUES (1)"),
    )


class _BrokenV2Store(PostgresEventStore):
    _migrations: ClassVar[tuple[Migration, ...]] = (
        *MIGRATIONS,
        ("CREATE TABLE {s}.extra (x int)", "CREATE TABLE {s}.events (x int)"),
    )


@pytest.mark.postgres
async def test_older_schema_is_migrated_in_one_transaction(
    schemas: Schemas, admin: asyncpg.Connection
) -> None:
    schema = schemas.new()
    async with schemas.store(schema) as store:
        await store.append("s", [_event()])
    current = len(MIGRATIONS)
    with pytest.raises(
        SchemaVersionError, match=f"from schema version {current} to {current + 1} failed"
    ):
        await _BrokenV2Store(schemas.url, schema=schema).open()
    assert await admin.fetchval(f'SELECT version FROM "{schema}".schema_version') == current
    assert await admin.fetchval("SELECT to_regclass($1)", f"{schema}.extra") is None
    async with _V2Store(schemas.url, schema=schema) as store:
        assert await store.head() == 1
    assert await admin.fetchval(f'SELECT version FROM "{schema}".schema_version') == current + 1
    assert await admin.fetchval(f'SELECT x FROM "{schema}".extra') == 1
    with pytest.raises(SchemaVersionError, match="newer"):
        await schemas.store(schema).open()


@pytest.mark.postgres
async def test_stores_opening_a_new_schema_at_once_all_succeed(schemas: Schemas) -> None:
    schema = schemas.new()
    stores = [schemas.store(schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        results = await asyncio.gather(
            *(s.append(f"s{i}", [_event()]) for i, s in enumerate(stores))
        )
        assert sorted(r.last_position for r in results) == [1, 2, 3, 4]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# -- several processes (store objects with their own pools) ------------------------------------


@pytest.mark.postgres
async def test_two_writers_and_a_tailing_reader_lose_nothing(schemas: Schemas) -> None:
    """Two pools write concurrently while a third tails: gapless, each event once, in order."""
    schema = schemas.new()
    per_task, tasks_per_store = 60, 5
    writers = [schemas.store(schema, pool_size=3) for _ in range(2)]
    reader = schemas.store(schema, pool_size=2)
    acknowledged: list[str] = []

    async def write(store: PostgresEventStore, w: int) -> None:
        own = 0
        for t in range(per_task):
            events = [_event(w=w, t=t) for _ in range(1 + t % 3)]
            if t % 2:
                await store.append(f"writer-{w}", events, expected_version=own)
                own += len(events)
            else:
                await store.append("shared", events, dedup_key=f"{w}:{t}")
            acknowledged.extend(e.id for e in events)

    total = sum(1 + t % 3 for t in range(per_task)) * tasks_per_store * len(writers)
    seen: list[str] = []

    async def tail() -> None:
        last = 0
        while len(seen) < total:
            await reader.wait_for_new(last, timeout=HANG_GUARD)
            for record in await reader.read_all(after=last, limit=100):
                assert record.position == last + 1, "the tail skipped or repeated"
                last = record.position
                seen.append(record.event.id)

    for store in (*writers, reader):
        await store.open()
    try:
        async with asyncio.timeout(HANG_GUARD * 2):
            await asyncio.gather(
                tail(),
                *(
                    write(store, i * tasks_per_store + k)
                    for i, store in enumerate(writers)
                    for k in range(tasks_per_store)
                ),
            )
        assert len(seen) == len(set(seen)) == total
        assert set(seen) == set(acknowledged)
        shared = await reader.read_stream("shared")
        assert [r.version for r in shared] == list(range(1, len(shared) + 1))
    finally:
        for store in (*writers, reader):
            await store.close()


@pytest.mark.postgres
async def test_dedup_key_writes_once_across_stores(schemas: Schemas) -> None:
    schema = schemas.new()
    async with schemas.store(schema) as one, schemas.store(schema) as two:
        copies = [
            store.append("deliveries", [_event(copy=i)], dedup_key="gh:same")
            for i in range(10)
            for store in (one, two)
        ]
        results = await asyncio.gather(*copies)
        assert [r.deduplicated for r in results].count(False) == 1
        assert {(r.version, r.first_position, r.last_position) for r in results} == {(1, 1, 1)}
        assert await one.head() == await two.head() == 1


class _NotifyOnlyStore(PostgresEventStore):
    """Polls so rarely that only NOTIFY (or a lost listener) can wake its waiters in time."""

    poll_interval = 3600.0
    fallback_poll_interval = 0.05


async def _listening(store: PostgresEventStore) -> asyncpg.Connection:
    """Start ``store``'s listener and return its connection (an implementation detail)."""
    await store.wait_for_new(10**9, timeout=0)
    async with asyncio.timeout(HANG_GUARD):
        while store._listener is None:  # noqa: ASYNC110 - a private attribute; no event to await
            await asyncio.sleep(0.01)
    return store._listener


@pytest.mark.postgres
async def test_notify_wakes_a_waiter_in_another_store(schemas: Schemas) -> None:
    schema = schemas.new()
    async with (
        schemas.store(schema) as writer,
        _NotifyOnlyStore(schemas.url, schema=schema) as waiter,
    ):
        await _listening(waiter)
        waiting = asyncio.create_task(waiter.wait_for_new(0, timeout=HANG_GUARD))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await writer.append("s", [_event(), _event()])
        async with asyncio.timeout(HANG_GUARD):
            assert await waiting == 2


@pytest.mark.postgres
async def test_waiters_survive_a_lost_listen_connection(
    schemas: Schemas, admin: asyncpg.Connection
) -> None:
    schema = schemas.new()
    async with (
        schemas.store(schema) as writer,
        _NotifyOnlyStore(schemas.url, schema=schema) as waiter,
    ):
        listener = await _listening(waiter)
        await admin.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
        waiting = asyncio.create_task(waiter.wait_for_new(0, timeout=HANG_GUARD))
        await writer.append("s", [_event()])
        async with asyncio.timeout(HANG_GUARD):
            assert await waiting == 1
            # It listens again (a private attribute; no event to await).
            while waiter._listener is None or waiter._listener is listener:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        waiting = asyncio.create_task(waiter.wait_for_new(1, timeout=HANG_GUARD))
        await writer.append("s", [_event()])
        async with asyncio.timeout(HANG_GUARD):
            assert await waiting == 2


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_log_lock_held_past_the_timeout_is_unavailable(
    schemas: Schemas, admin: asyncpg.Connection
) -> None:
    async with schemas.store(command_timeout=0.5) as store:
        async with admin.transaction():
            await admin.execute(f'SELECT * FROM "{store.schema}".log_head FOR UPDATE')
            with pytest.raises(StoreUnavailable, match="timed out"):
                await store.append("s", [_event()])
        assert await store.head() == 0
        assert await store.append("s", [_event()]) == AppendResult("s", 1, 1, 1)


@pytest.mark.postgres
async def test_one_batch_isolates_each_commits_failure(
    schemas: Schemas, admin: asyncpg.Connection
) -> None:
    """Commits queued behind a held lock share a transaction; each fails or lands alone.

    A CHECK constraint added behind the store's back makes the database itself refuse one
    commit's rows, which sends the batch down the commit-by-commit path.
    """
    async with schemas.store() as store:
        await admin.execute(
            f'ALTER TABLE "{store.schema}".events ADD CONSTRAINT no_poison '
            "CHECK (type <> 'test.poison')"
        )
        taken = _event(n="taken")
        await store.append("taken", [taken])
        shared = _event(n="shared")
        poison = Event(type="test.poison", source="tests")
        plans: list[tuple[list[Append], str | None]] = [
            ([Append("a", [_event()], 0)], None),
            ([Append("b", [_event(), taken])], None),  # id stored earlier
            ([Append("a", [_event()], 0)], None),  # stale: a is at 1 by now
            ([Append("c", [shared])], "key"),
            ([Append("c", [_event()])], "key"),  # same key in the same batch: deduplicated
            ([Append("d", [shared])], None),  # id claimed earlier in the batch
            ([Append("p", [_event(), poison])], "poisoned"),  # refused by the database
            ([Append("a", [_event(), _event()], 1)], None),
        ]
        async with admin.transaction():
            await admin.execute(f'SELECT * FROM "{store.schema}".log_head FOR UPDATE')
            tasks = [
                asyncio.create_task(store.commit(appends, dedup_key=key)) for appends, key in plans
            ]
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks)
        async with asyncio.timeout(HANG_GUARD):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert outcomes[0] == [AppendResult("a", 1, 2, 2)]
        assert isinstance(outcomes[1], InvalidEvent)
        assert taken.id in str(outcomes[1])
        assert isinstance(outcomes[2], WrongExpectedVersion)
        assert outcomes[3] == [AppendResult("c", 1, 3, 3)]
        assert outcomes[4] == [AppendResult("c", 1, 3, 3, deduplicated=True)]
        assert isinstance(outcomes[5], InvalidEvent)
        assert isinstance(outcomes[6], InvalidEvent)
        assert "no_poison" in str(outcomes[6])
        assert outcomes[7] == [AppendResult("a", 3, 4, 5)]
        assert [r.position for r in await store.read_all()] == [1, 2, 3, 4, 5]
        assert await store.stream_version("p") == 0
        # The refused commit's dedup key was not consumed.
        fixed = await store.append("p", [_event()], dedup_key="poisoned")
        assert fixed == AppendResult("p", 1, 6, 6)


@pytest.mark.postgres
async def test_store_recovers_from_lost_connections(
    schemas: Schemas, admin: asyncpg.Connection
) -> None:
    async with schemas.store() as store:
        await store.append("s", [_event()])
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"contexten:{store.schema}",
        )
        event = _event()
        try:
            await store.append("s", [event], dedup_key="retry-me")
        except StoreUnavailable:
            await store.append("s", [event], dedup_key="retry-me")  # the safe retry
        assert [r.event for r in await store.read_stream("s")][-1] == event
        assert await store.head() == 2
        await store.ping()


@pytest.mark.postgres
async def test_unstorable_text_is_refused_before_writing(schemas: Schemas) -> None:
    async with schemas.store() as store:
        for bad in ["a\x00b", "\ud800"]:
            with pytest.raises(ValueError, match="cannot be stored"):
                await store.append(bad, [_event()])
            with pytest.raises(ValueError, match="cannot be stored"):
                await store.append("s", [_event()], dedup_key=bad)
            with pytest.raises(ValueError, match="cannot be stored"):
                await store.save_checkpoint(bad, 1)
            with pytest.raises(InvalidEvent):
                await store.append("s", [Event(id=bad, type="t.x", source="tests")])
            assert await store.read_stream(bad) == []
            assert await store.stream_version(bad) == 0
            assert await store.list_streams(bad) == []
            assert await store.get_event(bad) is None
            assert await store.get_checkpoint(bad) is None
        with pytest.raises(ValueError, match="out of range"):
            await store.save_checkpoint("c", 2**63)
        assert await store.head() == 0


_NAME_CHARS = st.sampled_from(["a", "b", "%", "_", "\\", "$", "'", "é", "\ud7ff", "\ue000"]) | (
    st.characters(codec="utf-8", exclude_characters="\x00")
)


@pytest.mark.postgres
async def test_list_streams_prefixes_are_literal(schemas: Schemas) -> None:
    names = [
        "a%b",
        "a%",
        "a_b",
        "axb",
        "a\\b",
        "a$",
        "a$b",
        "ab",
        "a",
        "é",
        "\U0010ffff",
        "\ud7ff\U0010ffff",
        "\ue000",
    ]
    async with schemas.store() as store:
        for name in names:
            await store.append(name, [_event()])
        for prefix in [
            "",
            "a",
            "a%",
            "a_",
            "a\\",
            "a$",
            "\U0010ffff",
            "\ud7ff",
            "\ud7ff\U0010ffff",
            "é",
        ]:
            got = [s.stream for s in await store.list_streams(prefix)]
            assert got == sorted(n for n in names if n.startswith(prefix)), prefix


@pytest.mark.postgres
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.text(_NAME_CHARS, min_size=1, max_size=4), min_size=1, max_size=12, unique=True
    ),
    prefix=st.text(_NAME_CHARS, max_size=3),
)
def test_list_streams_matches_python_prefix_order(
    postgres_url: str, names: list[str], prefix: str
) -> None:
    async def check() -> None:
        made = Schemas(postgres_url)
        try:
            async with made.store() as store:
                await store.commit([Append(name, [_event()]) for name in names])
                want = [StreamInfo(n, 1) for n in sorted(names) if n.startswith(prefix)]
                assert await store.list_streams(prefix) == want
        finally:
            await made.drop()

    asyncio.run(check())
