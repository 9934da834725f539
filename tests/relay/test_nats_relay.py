"""The NATS JetStream relay, against real NATS servers: every event arrives once, in order
per key, with its id as ``Nats-Msg-Id``; restarts of NATS and of the relay lose nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from contexten import App, Event
from contexten.events.cloudevents import from_cloudevent
from contexten.exceptions import ConfigurationError, InvalidEvent
from contexten.observability.app_metrics import instrument_app
from contexten.observability.metrics import Metrics
from contexten.relay.nats import MSG_ID_HEADER, NatsRelay
from contexten.relay.wire import (
    CONTENT_TYPE,
    POSITION_HEADER,
    check_subject_prefix,
    encode_message,
    subject_for,
)
from contexten.store.sqlite import SqliteEventStore
from contexten.testing import create_test_app

from .conftest import PrivateNats, free_port

RELAY_PROCESS = Path(__file__).with_name("_relay_process.py")
GUARD = 60.0


def event(n: int, key: str | None = None, type: str = "github.push", **data: Any) -> Event:
    return Event(type=type, source="tests", subject=key, data={"n": n, **data})


async def consume_all(url: str, stream: str, *, expect: int | None = None) -> list[Msg]:
    """Every message of ``stream``, read by an ephemeral pull consumer (as another service
    would), acknowledged; waits until ``expect`` messages are there, if given."""
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + GUARD
        total = (await js.stream_info(stream)).state.messages
        while expect is not None and total < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("contexten.>", stream=stream)
        got: list[Msg] = []
        while len(got) < total:
            for msg in await sub.fetch(min(500, total - len(got)), timeout=10):
                await msg.ack()
                got.append(msg)
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


async def eventually(condition: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while True:
        if condition():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def position_of(msg: Msg) -> int:
    assert msg.headers is not None
    return int(msg.headers[POSITION_HEADER])


def check_per_key_order(msgs: list[Msg]) -> None:
    """Per ordering key, stream order is log order."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for msg in msgs:
        body = json.loads(msg.data)
        by_key[body.get("subject") or ""].append(position_of(msg))
    for key, positions in by_key.items():
        if key:
            assert positions == sorted(positions), f"key {key!r} out of order"


# -- the wire format (no server needed) ------------------------------------------------------


def test_types_map_to_subjects_unchanged_after_the_prefix() -> None:
    assert subject_for("github.pull_request.opened") == "contexten.github.pull_request.opened"
    assert subject_for("linear.issue-x.created", "acme.ctx") == "acme.ctx.linear.issue-x.created"
    with pytest.raises(InvalidEvent, match="does not map to a NATS subject"):
        subject_for("github.*")
    with pytest.raises(InvalidEvent):
        subject_for("github..push")
    for bad in ("", "a.>", "a b", "a..b", "*"):
        with pytest.raises(ConfigurationError):
            check_subject_prefix(bad)


def test_message_is_a_cloudevent_without_secrets() -> None:
    e = Event(
        type="slack.app_mention",
        source="slack",
        subject="C1",
        correlation_id="LIN-1",
        data={
            "token": "verification-token-canary",
            "event": {"text": "see https://bot:hunter2-canary@example.com/x", "user": "U1"},
        },
    )
    body, headers = encode_message(e, 42)
    assert headers == {"Content-Type": CONTENT_TYPE, POSITION_HEADER: "42"}
    assert b"canary" not in body
    cloud = json.loads(body)
    assert cloud["specversion"] == "1.0"
    assert cloud["id"] == e.id
    assert cloud["type"] == e.type
    assert cloud["subject"] == "C1"
    assert cloud["correlationid"] == "LIN-1"
    assert cloud["data"]["event"]["user"] == "U1"
    back = from_cloudevent(cloud)
    assert back.replace(data=e.data) == e  # everything but the redacted data round-trips


def test_bad_settings_are_refused_at_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="stream name"):
        NatsRelay("nats://127.0.0.1:4222", stream="a.b")
    with pytest.raises(ConfigurationError, match="publish_timeout"):
        NatsRelay("nats://127.0.0.1:4222", publish_timeout=0)
    monkeypatch.delenv("CONTEXTEN_NATS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="CONTEXTEN_NATS_URL"):
        App("memory://").relay_to_nats()
    app = App("memory://")
    app.relay_to_nats("nats://127.0.0.1:4222")
    with pytest.raises(ConfigurationError, match="already exists"):
        app.relay_to_nats("nats://127.0.0.1:4222")


def test_the_environment_turns_a_relay_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTEXTEN_NATS_URL", "nats://user:secret-canary@127.0.0.1:4222")
    monkeypatch.setenv("CONTEXTEN_NATS_STREAM", "TEAM")
    monkeypatch.setenv("CONTEXTEN_NATS_PATTERNS", "github.**, linear.issue.*")
    app = App("memory://")
    [relay] = app.relays
    assert relay.stream == "TEAM"
    assert relay.name == "relay.nats.TEAM"
    sub = app.subscriptions["relay.nats.TEAM"]
    assert [p.text for p in sub.compiled] == ["github.**", "linear.issue.*"]
    assert sub.echoes
    assert not sub.include_system
    assert "secret-canary" not in repr(relay)
    assert create_test_app().relays == ()  # a test app's events never reach a real broker


# -- against the shared NATS server ----------------------------------------------------------


@pytest.mark.nats
async def test_every_committed_event_is_relayed_once_in_order_per_key(
    nats_url: str, stream_name: str, tmp_path: Path
) -> None:
    app = App(f"sqlite:///{tmp_path / 'relay.db'}")
    relay = app.relay_to_nats(nats_url, stream=stream_name)
    metrics = Metrics()
    instrument_app(metrics, app.health)
    async with app:
        ids = []
        for n in range(120):
            kind = "github.push" if n % 2 else "linear.issue.created"
            e = event(n, f"k{n % 7}", kind)
            await app.publish(e)
            ids.append(e.id)
        # Bookkeeping streams ($-prefixed) are never relayed.
        await app.store.append("$internal-test", [event(999)])
        await app.drain(timeout=GUARD)
        report = (await app.health()).to_dict()
        await metrics.refresh()
        text = metrics.render().decode()
    msgs = await consume_all(nats_url, stream_name)
    assert [m.headers[MSG_ID_HEADER] for m in msgs if m.headers] == [
        json.loads(m.data)["id"] for m in msgs
    ]
    assert sorted(json.loads(m.data)["id"] for m in msgs) == sorted(ids)
    assert {m.subject for m in msgs} == {"contexten.github.push", "contexten.linear.issue.created"}
    assert all(m.headers and m.headers["Content-Type"] == CONTENT_TYPE for m in msgs)
    check_per_key_order(msgs)
    state = report["relays"][relay.name]
    assert state["lag"] == 0
    assert state["published"] == 120
    assert state["duplicates"] == 0
    assert state["connected"] is True
    assert state["stream"] == stream_name
    assert f'contexten_relay_lag{{relay="{relay.name}"}} 0.0' in text
    assert f'contexten_relay_published_total{{relay="{relay.name}"}} 120.0' in text


@pytest.mark.nats
async def test_patterns_choose_what_is_relayed(nats_url: str, stream_name: str) -> None:
    app = App("memory://")
    app.relay_to_nats(nats_url, stream=stream_name, patterns=["github.**"])
    async with app:
        for n in range(10):
            await app.publish(event(n, type="github.push" if n < 4 else "linear.issue.updated"))
        await app.drain(timeout=GUARD)
        [state] = (await app.health()).relays.values()
    msgs = await consume_all(nats_url, stream_name)
    assert sorted(json.loads(m.data)["data"]["n"] for m in msgs) == [0, 1, 2, 3]
    assert state["lag"] == 0  # the others count as done, not as lag


@pytest.mark.nats
async def test_a_republished_event_is_stored_once_by_its_msg_id(
    nats_url: str, stream_name: str
) -> None:
    app = App("memory://")
    first = app.relay_to_nats(nats_url, stream=stream_name, name="first")
    async with app:
        for n in range(30):
            await app.publish(event(n, f"k{n % 3}"))
        await app.drain(timeout=GUARD)
        # A second relay from the beginning of the log (as after a crash before any
        # checkpoint) publishes every event again: JetStream drops them all by Nats-Msg-Id.
        second = app.relay_to_nats(nats_url, stream=stream_name, name="second")
        await app.drain(timeout=GUARD)
    assert first.published == 30
    assert (second.published, second.duplicates) == (0, 30)
    assert len(await consume_all(nats_url, stream_name)) == 30


@pytest.mark.nats
async def test_an_unreachable_server_stalls_the_relay_visibly_and_loses_nothing(
    nats_url: str, stream_name: str
) -> None:
    app = App("memory://")
    down = app.relay_to_nats(
        f"nats://127.0.0.1:{free_port()}", stream=stream_name, connect_timeout=0.5
    )
    async with app:
        for n in range(5):
            await app.publish(event(n, "k"))
        await eventually(lambda: down.failures >= 2, "failed attempts")
        report = await app.health()
        letters = await app.dead_letters.list()
    state = report.relays[down.name]
    assert state["connected"] is False
    assert state["lag"] == 5
    assert state["failures"] >= 2
    assert state["last_error"]
    assert report.ok  # the broker being down does not stop webhooks from being stored
    assert letters == []  # an outage dead-letters nothing: it waits


@pytest.mark.nats
async def test_a_stream_without_our_subjects_is_not_changed_and_says_why(
    nats_url: str, stream_name: str
) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(name=stream_name, subjects=[f"{stream_name}.>"])
        )
    finally:
        await nc.close()
    app = App("memory://")
    relay = app.relay_to_nats(nats_url, stream=stream_name)
    async with app:
        await app.publish(event(1))
        await eventually(lambda: relay.last_error is not None, "the relay's error")
        state = (await app.health()).relays[relay.name]
    assert state["lag"] == 1
    assert "does not take contexten.>" in (state["last_error"] or "")


@pytest.mark.nats
async def test_a_message_too_large_for_the_stream_is_dead_lettered_then_redriven(
    nats_url: str, stream_name: str
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    config = StreamConfig(name=stream_name, subjects=["contexten.>"], max_msg_size=2_000)
    await js.add_stream(config)
    try:
        app = App("memory://")
        relay = app.relay_to_nats(nats_url, stream=stream_name)
        async with app:
            big = event(1, "a", blob="x" * 5_000)
            await app.publish(big)
            await app.publish(event(2, "b"))
            await app.drain(timeout=GUARD)
            [letter] = await app.dead_letters.list()
            state = (await app.health()).relays[relay.name]
            # The operator raises the limit and redrives the letter: it is relayed.
            config.max_msg_size = 100_000
            await js.update_stream(config)
            assert await app.dead_letters.redrive(letter.id)
            await app.drain(timeout=GUARD)
            assert await app.dead_letters.list() == []
    finally:
        await nc.close()
    assert letter.event_id == big.id
    assert letter.subscription == relay.name
    assert letter.error_type == "RelayRejected"
    assert "max_payload" in letter.error_message
    assert state["rejected"] == 1
    assert state["published"] == 1
    assert state["lag"] == 0
    msgs = await consume_all(nats_url, stream_name)
    assert [json.loads(m.data)["data"]["n"] for m in msgs] == [2, 1]


@pytest.mark.nats
async def test_two_workers_share_the_relay_by_partition_and_relay_each_event_once(
    nats_url: str, stream_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTEXTEN_HEARTBEAT_SECONDS", "0.2")
    monkeypatch.setenv("CONTEXTEN_LEASE_SECONDS", "1")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    apps = [App(url), App(url)]
    relays = [app.relay_to_nats(nats_url, stream=stream_name) for app in apps]
    async with apps[0], apps[1]:

        def held(app: App) -> int:
            return sum(len(s.partitions) for s in app.dispatcher.statuses())

        await eventually(lambda: held(apps[0]) == held(apps[1]) == 32, "a fair share each")
        for n in range(200):
            await apps[n % 2].publish(event(n, f"k{n % 50}"))
        await apps[0].drain(timeout=GUARD)
        await apps[1].drain(timeout=GUARD)
    assert all(r.published > 0 for r in relays)  # each relayed its own partitions
    assert sum(r.published for r in relays) == 200
    msgs = await consume_all(nats_url, stream_name)
    assert len(msgs) == 200
    check_per_key_order(msgs)


# -- a private server, killed and restarted; the relay process killed -9 ---------------------


class RelayProcess:
    """``_relay_process.py`` in a child process; follows its status lines."""

    def __init__(self, store: str, url: str, stream: str, checkpoint_interval: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RELAY_PROCESS), store, url, stream, str(checkpoint_interval)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "CONTEXTEN_NATS_URL": ""},
        )
        self.published = self.duplicates = self.failures = 0
        self.lag = -1
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            parts = raw.decode().split()
            if parts and parts[0] == "status":
                self.published, self.duplicates, self.lag, self.failures = map(int, parts[1:5])

    async def wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + GUARD
        while not condition():
            assert self.proc.poll() is None, "the relay process died"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        await self._reader
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.mark.nats
@pytest.mark.slow
async def test_nats_restart_and_relay_kill_9_lose_nothing_and_duplicate_nothing(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    stream = "RESTARTS"
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    total = 3_000
    ids: list[str] = []
    async with SqliteEventStore(url) as store:

        async def write(count: int) -> None:
            for _ in range(count // 20):
                batch = [event(len(ids) + i, f"k{(len(ids) + i) % 40}") for i in range(20)]
                for e in batch:
                    await store.append(f"tests-{e.subject}", [e])
                ids.extend(e.id for e in batch)
                await asyncio.sleep(0.01)

        await write(500)
        # A long checkpoint interval: at the kill -9, many acknowledged events are not
        # checkpointed yet, so the next relay publishes them again and JetStream must drop them.
        relay = RelayProcess(url, private_nats.url, stream, checkpoint_interval=1.0)
        try:
            await relay.wait(lambda: relay.published >= 200, "the first messages")
            writer = asyncio.create_task(write(total - 500))
            private_nats.kill()  # NATS dies mid-flow (SIGKILL)...
            await asyncio.sleep(1.0)
            private_nats.start()  # ...and comes back on the same port and store directory
            before = relay.published
            await relay.wait(lambda: relay.published >= before + 300, "relaying after the restart")
            assert relay.failures > 0  # it did try to publish while NATS was down
            await relay.kill()  # the relay dies mid-flow (kill -9)
            relay = RelayProcess(url, private_nats.url, stream, checkpoint_interval=0.05)
            await writer
            await relay.wait(lambda: relay.lag == 0 and len(ids) == total, "the relay to catch up")
        finally:
            await relay.kill()
    assert relay.duplicates > 0  # the killed relay's unsaved progress, republished and dropped
    msgs = await consume_all(private_nats.url, stream, expect=total)
    relayed = [json.loads(m.data)["id"] for m in msgs]
    assert len(relayed) == len(set(relayed)), "a duplicate reached the stream"
    assert set(relayed) == set(ids), f"{len(set(ids) - set(relayed))} events lost"
    check_per_key_order(msgs)
