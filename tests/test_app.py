"""The App API: registration, publishing, lifecycle hooks, health, run(), the test app."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

import contexten
from contexten import App, Event, HandlerContext, RetryPolicy, Subscription
from contexten.event_loop import EVENT_LOOP_ENV
from contexten.exceptions import AppNotRunning, ConfigurationError
from contexten.store.memory import MemoryEventStore
from contexten.testing import EventCapture, TestApp, create_test_app

HANG_GUARD = 30.0


async def noop(event: Event, ctx: HandlerContext) -> None:
    pass


def test_public_api() -> None:
    assert {"App", "Event", "HandlerContext", "RetryPolicy", "Subscription"} <= set(
        contexten.__all__
    )


def test_on_registers_and_returns_the_handler() -> None:
    app = App("memory://")

    async def handle(event: Event, ctx: HandlerContext) -> None:
        pass

    assert app.on("a.b")(handle) is handle
    [sub] = app.subscriptions.values()
    assert sub.name == "test_app.test_on_registers_and_returns_the_handler.<locals>.handle"
    assert sub.concurrency == 100
    assert sub.timeout_seconds == 60.0
    assert sub.start == "beginning"


def test_bad_registrations_are_refused_clearly() -> None:
    app = App("memory://")
    app.on("a.b", name="taken")(noop)
    with pytest.raises(ConfigurationError, match="already exists"):
        app.on("c.d", name="taken")(noop)

    def not_async(event: Event, ctx: HandlerContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="async"):
        app.on("a.b", name="sync")(not_async)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="concurrency"):
        app.on("a.b", name="zero", concurrency=0)(noop)
    with pytest.raises(ConfigurationError, match="timeout"):
        app.on("a.b", name="negative", timeout=-1)(noop)
    with pytest.raises(ConfigurationError, match="start"):
        app.on("a.b", name="later", start="tomorrow")(noop)  # type: ignore[arg-type]
    with pytest.raises(contexten.ContextenError, match="bad segment"):
        app.on("a..b", name="pattern")(noop)


def test_unknown_store_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown event store URL scheme 'mysql'"):
        App("mysql://localhost/db")


def test_store_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONTEXTEN_STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert App().store.url == f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.delenv("CONTEXTEN_STORE_URL")
    assert App().store.url == "sqlite:///contexten.db"


async def test_lifecycle_hooks_run_around_dispatching() -> None:
    app = App("memory://")
    calls: list[str] = []

    @app.on_startup
    async def first() -> None:
        calls.append(f"startup running={app.running} store={await app.store.head()}")

    @app.on_shutdown
    async def last() -> None:
        calls.append("shutdown 1")

    @app.on_shutdown
    async def earlier() -> None:
        calls.append("shutdown 2")

    @app.on("a.b", name="h")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        calls.append("handled")

    async with app:
        await app.publish(Event(type="a.b"))
        await app.drain(timeout=HANG_GUARD)
    assert calls == ["startup running=False store=0", "handled", "shutdown 2", "shutdown 1"]


async def test_a_failing_startup_hook_leaves_nothing_running(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'x.db'}")
    app.on("a.b", name="h")(noop)

    @app.on_startup
    async def broken() -> None:
        raise RuntimeError("cannot start")

    with pytest.raises(RuntimeError, match="cannot start"):
        await app.start()
    assert not app.running
    assert app.dispatcher.consumers == {}


async def test_a_failing_shutdown_hook_does_not_stop_the_shutdown() -> None:
    store = MemoryEventStore()
    app = App(store)

    @app.on_shutdown
    async def broken() -> None:
        raise RuntimeError("cannot stop")

    async with app:
        pass
    assert not app.running


async def test_subscriptions_can_be_added_while_running() -> None:
    app = create_test_app()
    got: list[str] = []
    async with app:
        await app.publish(Event(type="a.b"))

        async def late(event: Event, ctx: HandlerContext) -> None:
            got.append(event.type)

        app.add_subscription(Subscription("late", "a.*", late))
        await app.drain(timeout=HANG_GUARD)
    assert got == ["a.b"]


async def test_handler_context() -> None:
    app = create_test_app()
    seen: list[HandlerContext] = []

    @app.on("a.b", name="ctx")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        seen.append(ctx)

    async with app:
        result = await app.publish(Event(type="a.b"))
        await app.drain(timeout=HANG_GUARD)
    [ctx] = seen
    assert ctx.app is app
    assert ctx.store is app.store
    assert ctx.subscription == "ctx"
    assert ctx.position == result.last_position
    assert ctx.agents is app.agents
    assert ctx.agents.slack.name == "slack"
    assert ctx.idempotency_key == f"ctx:{ctx.event.id}"
    assert "ctx" in repr(ctx)


async def test_health_reports_each_part() -> None:
    app = create_test_app()
    gate = asyncio.Event()
    started = asyncio.Event()

    @app.on("a.b", name="slow")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        started.set()
        await gate.wait()

    before = await app.health()
    assert not before.ok
    assert not before.running
    async with app:
        await app.publish(Event(type="a.b", subject="one"))
        await app.publish(Event(type="a.b", subject="one"))
        await asyncio.wait_for(started.wait(), HANG_GUARD)
        busy = await app.health()
        gate.set()
        await app.drain(timeout=HANG_GUARD)
        idle = await app.health()
    assert busy.ok
    assert busy.store.reachable
    assert busy.store.head == 2
    slow = next(s for s in busy.subscriptions if s.name == "slow")
    assert (slow.lag, slow.pending, slow.state) == (2, 2, "running")
    slow = next(s for s in idle.subscriptions if s.name == "slow")
    assert (slow.lag, slow.pending, slow.handled, slow.checkpoint) == (0, 0, 2, 2)
    assert idle.dead_letters == 0
    data = idle.to_dict()
    assert data["ok"] is True
    assert data["store"]["url"] == "memory://"
    assert {s["name"] for s in data["subscriptions"]} == {"slow", "contexten.testing.capture"}


def test_health_hides_store_passwords() -> None:
    from contexten.observability.redaction import redact_url

    assert redact_url("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


async def test_capture_wait_for_and_helpers() -> None:
    app = create_test_app()

    @app.on("demo.ping", name="pong")
    async def pong(event: Event, ctx: HandlerContext) -> None:
        await ctx.emit("demo.pong", {"to": event.id})

    async with app:
        ping = Event(type="demo.ping", correlation_id="c-1")
        await app.publish(ping)
        [reply] = await app.capture.wait_for("demo.pong")
        with pytest.raises(TimeoutError, match=r"demo\.never"):
            await app.capture.wait_for("demo.never", timeout=0.01)
    assert reply.data == {"to": ping.id}
    assert app.capture.caused_by(ping) == [reply]
    assert [e.type for e in app.capture] == ["demo.ping", "demo.pong"]
    assert len(app.capture) == 2
    app.capture.clear()
    assert app.capture.events == []


async def test_capture_on_a_plain_app() -> None:
    app = App("memory://")
    capture = EventCapture("x.*", name="mine").attach(app)
    async with app:
        await app.publish(Event(type="x.y"))
        await app.publish(Event(type="z.y"))
        await app.drain(timeout=HANG_GUARD)
    assert [e.type for e in capture.events] == ["x.y"]


def test_test_app_is_in_memory() -> None:
    app = TestApp()
    assert app.store.url == "memory://"
    assert "memory://" in repr(app)


async def test_serve_until_stopped() -> None:
    app = create_test_app()
    stop = asyncio.Event()
    got: list[str] = []

    @app.on("a.b", name="served")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.type)
        stop.set()

    async def publish_when_running() -> None:
        while not app.running:  # noqa: ASYNC110 - nothing to wait on before start
            await asyncio.sleep(0.001)
        await app.publish(Event(type="a.b"))

    async with asyncio.timeout(HANG_GUARD):
        await asyncio.gather(app.serve(stop), publish_when_running())
    assert got == ["a.b"]
    assert not app.running
    with pytest.raises(AppNotRunning):
        await app.publish(Event(type="a.b"))


@pytest.mark.parametrize(("choice", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_run_stops_cleanly_on_sigterm(tmp_path: Path, choice: str | None, loop: str) -> None:
    """App.run() (and so ``contexten worker``) runs on uvloop, as ``serve`` does, unless
    CONTEXTEN_EVENT_LOOP says asyncio; either way SIGTERM stops it cleanly."""
    script = tmp_path / "service.py"
    url = f"sqlite:///{tmp_path / 'run.db'}"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            import gc
            from contexten import App

            app = App({url!r})

            @app.on("a.b", name="svc")
            async def handler(event, ctx):
                pass

            @app.on_startup
            async def ready():
                loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
                print("ready", loop, gc.get_freeze_count() > 0, flush=True)

            @app.on_shutdown
            async def bye():
                print("bye", flush=True)

            app.run()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != EVENT_LOOP_ENV}
    if choice is not None:
        env[EVENT_LOOP_ENV] = choice
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert await proc.stdout.readline() == f"ready {loop} True\n".encode()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out == b"bye\n"
    assert b'"event": "app stopped"' in err  # JSON lines: stderr is not a terminal


async def test_the_test_app_skips_backoff_time() -> None:
    app = create_test_app()
    attempts: list[int] = []

    @app.on("a.b", name="hourly", retry=RetryPolicy(initial_interval=3600, maximum_attempts=3))
    async def handler(event: Event, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("still down")

    async with app:
        await app.publish(Event(type="a.b"))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
    assert attempts == [1, 2, 3]
    waited = (letter.last_failure_at - letter.first_failure_at).total_seconds()
    assert waited >= 3 * 3600 * 0.8  # two backoffs: 1 h and 2 h, +/-20% jitter


async def test_a_non_dispatching_app_only_stores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'split.db'}"
    got: list[str] = []

    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.type)

    receiver = App(url, dispatch=False)
    receiver.on("a.b", name="work")(handler)
    async with receiver:
        await receiver.publish(Event(type="a.b"))
        with pytest.raises(AppNotRunning):
            await receiver.drain()
        assert (await receiver.health()).subscriptions == ()
    assert got == []
    worker = App(url)
    worker.on("a.b", name="work")(handler)
    async with worker:
        await worker.drain(timeout=HANG_GUARD)
    assert got == ["a.b"]


async def test_run_on_a_corrupt_store_fails_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not a database, just some bytes " * 200)
    script = tmp_path / "service.py"
    script.write_text(f"from contexten import App\n\nApp({f'sqlite:///{db}'!r}).run()\n")
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"Traceback" not in err
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert str(db) in last


def test_key_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="key"):
        App("memory://").on("a.b", name="k", key="subject")(noop)  # type: ignore[arg-type]
