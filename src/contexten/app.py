"""The App: wires the store, the dispatcher, the dead-letter queue and supervision together.

::

    app = App()   # store from CONTEXTEN_STORE_URL, default sqlite:///contexten.db

    @app.on("github.pull_request.opened")
    async def announce(event: Event, ctx: HandlerContext) -> None:
        await ctx.emit("contexten.announcement.requested", {"pr": event.subject})

    async with app:                      # open the store, start dispatching
        await app.publish(Event(type="github.pull_request.opened", source="github"))

    app.run()                            # or: block until SIGINT/SIGTERM (scripts)

Acting on platforms: ``ctx.agents`` in handlers is the App's
:class:`~contexten.agents.AgentManager` (``await ctx.agents.slack.post_message(...)``), and
module-level actions (``await wf.step(linear.move_issue, ...)``) use the App's client registry
while it runs. Clients come from the environment (``CONTEXTEN_GITHUB_TOKEN``...) unless
:meth:`App.use_agents` says otherwise; no client (no pool, no connection) is created before an
action needs it, so an App that never acts costs nothing and needs no credentials. Every action
is recorded as a ``contexten.action.*`` event, and the webhooks our own actions cause (echoes)
are not delivered to handlers or workflow triggers unless they ask (``echoes=True``); see
:mod:`contexten.agents.runtime`.

Extensions plug in through :meth:`App.add_subscription`, :meth:`App.on_startup` /
:meth:`App.on_shutdown`, the shared :attr:`App.supervisor` for their background loops, and
:attr:`App.extensions` to keep their state.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import os
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self, TypeVar

import structlog

from contexten import event_loop
from contexten.bus.dead_letters import DeadLetterQueue
from contexten.bus.dispatcher import Dispatcher
from contexten.bus.health import HealthReport, ProjectionHealth, check_health
from contexten.bus.streams import default_stream
from contexten.bus.subscription import (
    KeyFunction,
    Predicate,
    StartFrom,
    Subscription,
    app_root,
    default_key,
    default_name,
)
from contexten.clock import Clock, WallClock
from contexten.event_loop import serving_gc
from contexten.events.envelope import Event
from contexten.exceptions import AppNotRunning, ConfigurationError, ContextenError
from contexten.observability import tracing
from contexten.observability.logging import configure_logging, get_logger
from contexten.observability.redaction import redact_url
from contexten.projections import Projection, Projections, create_read_models
from contexten.projections.manager import linger_from_env
from contexten.projections.read_side import ReadSide, builtin_projections
from contexten.resilience.retry import RetryPolicy
from contexten.resilience.supervisor import Supervisor, TaskState
from contexten.store import EventStore, create_store
from contexten.store.base import AppendResult, ExpectedVersion, LeaseCheckpoint, StreamState
from contexten.store.opening import open_wait_from_env, open_with_retry
from contexten.store.retention import (
    DEFAULT_DEDUP_WINDOW,
    RETENTION_DUE,
    RETENTION_STREAM,
    PruneReport,
    RetentionPolicy,
    RetentionRule,
    prune,
)
from contexten.workflows import (
    IdReusePolicy,
    MigrationPlan,
    StateMachine,
    WorkflowEngine,
    WorkflowHandle,
    WorkflowInfo,
    WorkflowStatus,
)
from contexten.workflows.schedules import Schedule

if TYPE_CHECKING:
    from contexten.agents.manager import AgentManager
    from contexten.agents.runtime import AgentRuntime
    from contexten.bus.context import HandlerContext
    from contexten.integrations.client import ClientRegistry
    from contexten.integrations.echo import BotIdentity
    from contexten.relay.nats import NatsRelay

__all__ = ["App", "Hook"]

H = TypeVar("H", bound=Callable[..., Awaitable[None]])
W = TypeVar("W", bound=Callable[..., Awaitable[Any]])
Hook = Callable[[], Awaitable[None]]
"""A startup or shutdown hook: ``async def hook() -> None``."""

_ECHO_PREFIXES: Final = ("github.", "linear.", "slack.")
RETENTION_SCHEDULE: Final = "contexten-retention"
"""The schedule (and subscription) name of :meth:`App.retention`'s periodic runs."""
_PLATFORM_ENV: Final = (
    "CONTEXTEN_SANDBOX_URL",
    "CONTEXTEN_GITHUB_TOKEN",
    "CONTEXTEN_LINEAR_API_KEY",
    "CONTEXTEN_SLACK_BOT_TOKEN",
    "CONTEXTEN_CODEGEN_TOKEN",
)


CODEGEN_WATCHER: Final = "codegen-agent-runs"
"""The supervised task that polls the Codegen runs the App's actions started."""


class App:
    """A Contexten application: handlers, the store they read from, and their lifecycle.

    Args:
        store: a store URL (``sqlite:///path.db``, ``memory://``...) or an :class:`EventStore`.
            Default: ``CONTEXTEN_STORE_URL``, else ``sqlite:///contexten.db``. A store built
            from a URL is owned (opened and closed) by the app; a store instance passed in is
            opened by the app but left open for its owner to close.
        clock: where time comes from (retry backoff, dead-letter timestamps); tests pass a
            virtual clock.
        shutdown_grace: seconds in-flight handlers get to finish when the app stops; the
            rest are cancelled and redelivered at the next start.
        checkpoint_interval: seconds between checkpoint saves, at most.
        batch_size: log entries each subscription reads per query.
        dispatch: False for a process that only stores events (one taking webhooks while
            another, ``contexten worker``, runs the handlers on the same store): it opens
            the store and runs the hooks but delivers nothing.
        agents: what handlers and workflows act through: a
            :class:`~contexten.integrations.client.ClientRegistry` (e.g. a sandbox's
            ``sandbox.clients()``) or a ready :class:`~contexten.agents.AgentManager`.
            Default: clients configured from the environment, built on first use.
        bot: who "we" are on each platform, for echo detection (default: from the
            environment, see :class:`~contexten.integrations.echo.BotIdentity`).
        root: the directory default subscription names are relative to (default: that of
            the file that builds the App, which does not move however it is launched).
        store_open_wait: seconds :meth:`start` keeps retrying a store it cannot reach (a
            PostgreSQL that is down or restarting), with backoff, logging each failure,
            before it fails with :class:`~contexten.exceptions.StoreUnavailable`. Default:
            ``CONTEXTEN_STORE_OPEN_WAIT``, else 0 (fail at once); ``contexten worker`` and
            ``contexten serve`` default to 30 (their ``--store-wait``).

    Any number of dispatching processes may share one store: each subscription's events are
    split into partitions by key, and each partition is leased to one live worker at a time
    (see ``docs/scaling.md``), so every event is delivered once while all workers live.

    Raises:
        ConfigurationError: the store URL's scheme is unknown or its driver is missing.
    """

    relay_from_env: ClassVar[bool] = True
    """Whether ``CONTEXTEN_NATS_URL`` turns a relay on (test apps say no: their events are not
    real)."""

    def __init__(
        self,
        store: str | EventStore | None = None,
        *,
        clock: Clock | None = None,
        shutdown_grace: float = 10.0,
        checkpoint_interval: float = 0.05,
        batch_size: int = 500,
        dispatch: bool = True,
        agents: AgentManager | ClientRegistry | None = None,
        bot: BotIdentity | None = None,
        root: str | os.PathLike[str] | None = None,
        store_open_wait: float | None = None,
    ) -> None:
        self.root = os.path.abspath(root) if root is not None else app_root(2)
        """What default subscription names are relative to (:func:`default_name`): ``root=``,
        else the directory of the file that built the App."""
        pinned = _PINNED.get()
        if pinned is not None:  # a tool runs this app elsewhere (shadow replay)
            store, clock, agents = pinned.store, pinned.clock, pinned.agents
        self._pinned = pinned is not None
        if isinstance(store, EventStore):
            self._store, self._owns_store = store, False
        else:
            self._store, self._owns_store = create_store(store), True
        self.clock: Clock = clock or WallClock()
        self.shutdown_grace = shutdown_grace
        if store_open_wait is not None and not store_open_wait >= 0:
            raise ConfigurationError("store_open_wait must be >= 0 seconds")
        self.store_open_wait: float | None = store_open_wait
        """Seconds :meth:`start` retries an unreachable store (None: from the environment,
        else 0); the CLI sets it from ``--store-wait`` when the App does not say."""
        self.dispatch = dispatch
        self.supervisor = Supervisor(clock=self.clock)
        """Runs background loops and restarts them when they crash; extensions may use it."""
        self.extensions: dict[str, Any] = {}
        """Where extensions (the workflow engine...) keep their per-app state."""
        self.dead_letters = DeadLetterQueue(self._store, clock=self.clock)
        """List, redrive and discard parked events."""
        self._dispatcher = Dispatcher(
            self._store,
            clock=self.clock,
            supervisor=self.supervisor,
            publish=self._store_event,
            app=self,
            batch_size=batch_size,
            checkpoint_interval=checkpoint_interval,
        )
        self.workflows = WorkflowEngine(self._store, clock=self.clock, supervisor=self.supervisor)
        """The durable workflow engine; it runs while the app dispatches, if anything is
        registered with :meth:`workflow` or :meth:`add`."""
        self.projections = Projections(
            self._store,
            create_read_models(self._store),
            batch_size=batch_size,
            linger=linger_from_env(),
        )
        """The read models (built-ins and :meth:`add_projection`); they run while the app
        dispatches."""
        for projection in builtin_projections():
            self.projections.add(projection)
        self.read = ReadSide(self.projections)
        """Reads of the built-in read models (workflows, dead letters, work items...)."""
        self.retention_policy = RetentionPolicy()
        """What :meth:`prune` and ``contexten store prune --app`` remove (see
        :meth:`retention`): by default dedup keys past 7 days, no event data."""
        self.workflows.unfinished_index = self._unfinished_workflows
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._running = False
        self._workflows_started = False
        self._log = get_logger("contexten.app")
        self._runtime: AgentRuntime | None = None
        self._agents_configured = False
        self._relays: list[NatsRelay] = []
        if agents is not None or bot is not None:
            self.use_agents(agents, bot=bot)
        if self.relay_from_env and not self._pinned and os.environ.get("CONTEXTEN_NATS_URL"):
            self.relay_to_nats()  # a tool re-running this app elsewhere never relays

    # -- configuration ---------------------------------------------------------------------

    @property
    def store(self) -> EventStore:
        """The event store (open while the app runs)."""
        return self._store

    @property
    def running(self) -> bool:
        """Whether the app is started and not stopped."""
        return self._running

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        """Every registered subscription by name."""
        return self._dispatcher.subscriptions

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher (its consumers' status, drain)."""
        return self._dispatcher

    def on(
        self,
        patterns: str | Sequence[str],
        *,
        where: Predicate | None = None,
        retry: RetryPolicy | None = None,
        concurrency: int = 100,
        timeout: float | timedelta | None = 60.0,
        name: str | None = None,
        key: KeyFunction | None = default_key,
        start: StartFrom = "beginning",
        include_system: bool = False,
        echoes: bool = False,
    ) -> Callable[[H], H]:
        """Decorator: deliver events matching ``patterns`` to the decorated handler.

        The handler is returned unchanged (still callable directly in tests). Its subscription
        is named ``name``, by default the handler's file relative to :attr:`root` as a dotted
        path plus its qualname (:func:`~contexten.bus.subscription.default_name`): the same
        however the file is launched. The name is durable (the checkpoint is stored under
        it). See :class:`Subscription` for the options; ``echoes=True`` also delivers the
        webhooks our own actions caused.

        Raises:
            ConfigurationError: bad options, a non-async handler, or a name already in use.
        """

        def register(handler: H) -> H:
            chosen = name if name is not None else default_name(handler, self.root)
            self.add_subscription(
                Subscription(
                    name=chosen,
                    previous_names=() if name is not None else _legacy_names(handler, chosen),
                    patterns=patterns,
                    handler=handler,
                    where=where,
                    retry=retry if retry is not None else RetryPolicy(),
                    concurrency=concurrency,
                    timeout=timeout,
                    key=key,
                    start=start,
                    include_system=include_system,
                    echoes=echoes,
                )
            )
            return handler

        return register

    def add_subscription(self, subscription: Subscription) -> None:
        """Register a subscription (what ``@app.on`` does); allowed while running too.

        The handler runs with ``ctx.agents`` set and its actions recorded; echoes are
        filtered out unless ``subscription.echoes``.

        Raises:
            ConfigurationError: another subscription has the same name.
        """
        handler = subscription.handler

        @functools.wraps(handler)
        async def act_as_app(event: Event, ctx: HandlerContext) -> None:
            await (self._runtime or self._agent_runtime()).handle(handler, event, ctx)

        where = subscription.where if subscription.echoes else self._no_echoes(subscription.where)
        self._dispatcher.add(dataclasses.replace(subscription, handler=act_as_app, where=where))

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``await hook()`` at start, after the store opens and before dispatching."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``await hook()`` at stop, after dispatching stops and before the store closes
        (in reverse order of registration)."""
        self._shutdown.append(hook)
        return hook

    def add_projection(self, projection: Projection) -> Projection:
        """Register a read model (see :class:`~contexten.projections.Projection`); it is
        folded from the whole log while the app dispatches, its checkpoint beside its rows.

        Raises:
            ConfigurationError: the name or a table name is taken, or the app is running.
        """
        if self._running:
            raise ConfigurationError("add_projection() must be called before the app starts")
        return self.projections.add(projection)

    def relay_to_nats(
        self,
        url: str | None = None,
        *,
        patterns: str | Sequence[str] | None = None,
        stream: str | None = None,
        **options: Any,
    ) -> NatsRelay:
        """Publish every committed event (or those matching ``patterns``) to NATS JetStream,
        on subjects ``contexten.<type>``, as CloudEvents JSON with ``Nats-Msg-Id`` = the event
        id; see :mod:`contexten.relay.nats`. An outbox: the relay is a subscription of this
        app (partitions, leases, checkpoints), which resumes from its checkpoint after a
        crash. Unset arguments come from ``CONTEXTEN_NATS_URL``, ``CONTEXTEN_NATS_STREAM``
        (default ``CONTEXTEN``) and ``CONTEXTEN_NATS_PATTERNS``; setting
        ``CONTEXTEN_NATS_URL`` turns a relay on in every App without a call.

        Args:
            url: the NATS server(s), ``nats://host:4222``.
            patterns: event type patterns to relay (default: all).
            stream: the JetStream stream (created with subjects ``contexten.>`` if missing).
            options: further :class:`~contexten.relay.nats.NatsRelay` settings
                (``subject_prefix``, ``duplicate_window``, ``publish_timeout``, ``name``...).

        Raises:
            ConfigurationError: no URL, a bad setting, the nats extra missing, or a relay
                with the same name exists.
        """
        from contexten.relay.nats import NatsRelay  # the nats extra, loaded when asked for

        relay = NatsRelay.from_env(url, patterns=patterns, stream=stream, **options)
        self._dispatcher.add(relay.subscription)  # echoes too: every committed event
        self._relays.append(relay)
        self.on_shutdown(relay.close)
        return relay

    @property
    def relays(self) -> Sequence[NatsRelay]:
        """The relays configured with :meth:`relay_to_nats` (or ``CONTEXTEN_NATS_URL``)."""
        return tuple(self._relays)

    async def _relay_health(self) -> dict[str, dict[str, Any]]:
        return {relay.name: await relay.health(self._store) for relay in self._relays}

    async def _unfinished_workflows(self) -> list[str]:
        # The engine's start-up scan: the read model, caught up to the head first.
        await self.projections.catch_up("workflows")
        return await self.read.unfinished_workflow_ids()

    # -- agents ----------------------------------------------------------------------------

    @property
    def agents(self) -> AgentManager:
        """The agents handlers see as ``ctx.agents`` (built on first use)."""
        return self._agent_runtime().manager

    @property
    def clients(self) -> ClientRegistry:
        """The client registry actions use while the app runs (built on first use)."""
        return self._agent_runtime().clients

    def use_agents(
        self, agents: AgentManager | ClientRegistry | None = None, *, bot: BotIdentity | None = None
    ) -> AgentManager:
        """Say what handlers and workflows act through (before :meth:`start`).

        Args:
            agents: a :class:`~contexten.integrations.client.ClientRegistry` (the
                sandbox's ``sandbox.clients()``...), an
                :class:`~contexten.agents.AgentManager`, or None for clients from the
                environment.
            bot: our bot's identities for echo detection (default: from the environment).

        Returns:
            The agent manager (``app.agents``), to register more agents or rules on.

        Raises:
            ConfigurationError: the app is running.
        """
        if self._running:
            raise ConfigurationError("use_agents() must be called before the app starts")
        if self._pinned and self._runtime is not None:
            self._log.info("use_agents() ignored: this app runs pinned to other agents")
            return self._runtime.manager
        from contexten.agents.manager import AgentManager
        from contexten.agents.runtime import AgentRuntime
        from contexten.integrations.client import ClientRegistry

        manager = agents if isinstance(agents, AgentManager) else None
        clients = agents if isinstance(agents, ClientRegistry) else None
        if agents is not None and manager is None and clients is None:
            raise TypeError(f"agents= takes a ClientRegistry or an AgentManager, not {agents!r}")
        self._runtime = AgentRuntime(
            self._store, clients=clients, manager=manager, identity=bot, engine=self.workflows
        )
        self._agents_configured = True
        return self._runtime.manager

    def is_echo(self, event: Event) -> bool:
        """Whether ``event`` is a webhook our own action caused (our bot is its actor, or it
        is about an object one of our recorded actions just touched)."""
        if not event.type.startswith(_ECHO_PREFIXES):
            return False
        return self._agent_runtime().is_echo(event)

    def _agent_runtime(self) -> AgentRuntime:
        if self._runtime is None:
            from contexten.agents.runtime import AgentRuntime

            self._runtime = AgentRuntime(self._store, engine=self.workflows)
        return self._runtime

    def _no_echoes(self, where: Predicate | None) -> Predicate:
        """``where``, and not an echo."""
        prefixes = _ECHO_PREFIXES
        if where is None:
            return lambda e: not (e.type.startswith(prefixes) and self.is_echo(e))
        condition = where
        return lambda e: not (e.type.startswith(prefixes) and self.is_echo(e)) and condition(e)

    @contextlib.contextmanager
    def acting(self, cause: Event | None = None) -> Iterator[None]:
        """Inside the block (and tasks started in it), actions use the app's clients and are
        recorded in its log, caused by ``cause``; handlers and workflow steps already are.
        For scripts and tests acting on the app's behalf."""
        with self._agent_runtime().bound(cause):
            yield

    def _bound(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self._runtime is None else self._runtime.bound()

    def _platforms_configured(self) -> bool:
        return self._agents_configured or any(os.environ.get(name) for name in _PLATFORM_ENV)

    async def _start_agents(self) -> None:
        """Build the runtime (handlers and workflows start bound to it: no network, no
        clients yet); when platforms are configured, start it and mark echoes."""
        runtime = self._agent_runtime()
        if self._platforms_configured():
            await runtime.start()
            marker = runtime.echo_marker()
            if self.dispatch and marker.name not in self.subscriptions:
                self._dispatcher.add(marker)
            if self.dispatch and self._watcher_stopped():
                # Codegen documents polling, not webhooks: the runs our actions started are
                # followed here and their status changes stored as codegen.agent_run.* events.
                from contexten.agents.codegen_runs import AgentRunWatcher

                watcher = AgentRunWatcher(
                    self._store,
                    runtime.clients,
                    clock=self.clock,
                    owner=self._dispatcher.worker_id,  # one process polls, by lease
                    lease_ttl=self._dispatcher.leases.lease,
                )
                self.supervisor.start(CODEGEN_WATCHER, watcher.run)

    def _watcher_stopped(self) -> bool:
        if CODEGEN_WATCHER not in self.supervisor:
            return True
        return self.supervisor.status(CODEGEN_WATCHER).state in (
            TaskState.STOPPED,
            TaskState.FINISHED,
        )

    # -- workflows -------------------------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        on: str | None = None,
        where: Predicate | None = None,
        key: Callable[[Event], Any] | None = None,
        version: int | str = 1,
        max_concurrent: int | None = None,
        max_per_key: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        echoes: bool = False,
        id_reuse: IdReusePolicy | str | None = None,
    ) -> Callable[[W], W]:
        """Decorator: register a durable workflow ``async def fn(wf, input)``.

        With ``on`` (and optionally ``where``), each matching event starts an instance whose
        id is ``{name}:{key(event)}``: while that instance is open, a second event for the
        same key is absorbed (recorded in its history, logged, counted); once it has closed,
        the next event starts run 2 of the id (``id_reuse`` says otherwise). Echoes of our
        own actions start nothing unless ``echoes=True``. Instances are also started
        explicitly with :meth:`start_workflow`. Register ``version=2`` of a name beside
        version 1 to change it safely: new instances start on the newest, each instance
        finishes on the version it started with. See
        :class:`~contexten.workflows.WorkflowEngine` for the options.

        ``max_concurrent`` caps the instances running at once and ``max_per_key`` those
        running per ``concurrency_key(input)`` (for an event-triggered workflow the input is
        the event: ``concurrency_key=lambda e: e.data["repo"]``), over every process on the
        store; a waiting or sleeping instance holds no slot, and a dead process's slots free
        up when its lease lapses.

        Raises:
            ConfigurationError: ``max_per_key`` without ``concurrency_key``, or an option
                the engine refuses.
        """
        if on is not None and not echoes:
            where = self._no_echoes(where)
        return self.workflows.workflow(
            name,
            on=on,
            where=where,
            key=key,
            version=version,
            max_concurrent=max_concurrent,
            max_per_key=max_per_key,
            concurrency_key=concurrency_key,
            id_reuse=id_reuse,
        )

    def schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str = "UTC",
        input: Any = None,
        overlap: Literal["skip", "buffer_one", "allow_all"] = "skip",
        catch_up: Literal["none", "last", "all"] = "last",
        catch_up_window: timedelta = timedelta(hours=1),
        max_catch_up: int = 10,
    ) -> Callable[[W], W]:
        """Decorator: register ``async def fn(wf, input)`` as workflow ``name`` and start it
        on a durable schedule: once per tick across every worker on the store, surviving
        restarts (run ids ``sched:{name}:{tick}``)::

            @app.schedule("standup", cron="0 9 * * MON-FRI", timezone="Europe/Berlin")
            async def standup(wf, _):
                ...

        See :class:`~contexten.workflows.schedules.Schedule` for the options; use
        :meth:`add_schedule` for a schedule that starts another workflow or publishes an
        event.
        """

        def register(fn: W) -> W:
            self.workflows.register(fn, name=name)
            self.add_schedule(
                Schedule(
                    name,
                    cron=cron,
                    every=every,
                    timezone=timezone,
                    workflow=name,
                    input=input,
                    overlap=overlap,
                    catch_up=catch_up,
                    catch_up_window=catch_up_window,
                    max_catch_up=max_catch_up,
                )
            )
            return fn

        return register

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Register a durable :class:`~contexten.workflows.schedules.Schedule`."""
        return self.workflows.schedule(schedule)

    def retention(
        self,
        rules: Mapping[str, timedelta | str] | Sequence[RetentionRule | str] = (),
        *,
        dedup_window: timedelta | str = DEFAULT_DEDUP_WINDOW,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str = "UTC",
    ) -> RetentionPolicy:
        """Bound the store's growth (see :mod:`contexten.store.retention`)::

            app.retention({"github.**": timedelta(days=90)}, cron="0 3 * * *")

        Dedup keys older than ``dedup_window`` (default 7 days) are dropped; the data of
        events matching a rule's pattern, once older than its age, is replaced by a marker
        (the envelope stays). ``contexten store prune --app ...`` applies it; with ``cron``
        or ``every`` it also runs on a durable schedule (once per tick across workers),
        each run recorded as ``contexten.retention.applied`` in ``$retention``.

        Raises:
            ConfigurationError: a bad pattern, age or schedule.
        """
        policy = RetentionPolicy.build(rules, dedup_window=dedup_window)
        self.retention_policy = policy
        if cron is not None or every is not None:
            self.add_schedule(
                Schedule(
                    RETENTION_SCHEDULE,
                    cron=cron,
                    every=every,
                    timezone=timezone,
                    event=RETENTION_DUE,
                )
            )
            self.on(RETENTION_DUE, name=RETENTION_SCHEDULE, key=None, concurrency=1, timeout=None)(
                self._scheduled_prune
            )
        return policy

    async def prune(self, *, dry_run: bool = True, reclaim: bool = False) -> PruneReport:
        """Apply :attr:`retention_policy` now (a dry run unless ``dry_run=False``), sparing
        the events of open dead letters.

        Raises:
            ConfigurationError: the store cannot prune.
        """
        return await prune(
            self._store,
            self.retention_policy,
            protected=self.read.retention_protected,
            dry_run=dry_run,
            reclaim=reclaim,
        )

    async def _scheduled_prune(self, event: Event, ctx: HandlerContext) -> None:
        report = await self.prune(dry_run=False)
        self._log.info("retention: %s", report.summary())
        await self._store.append(
            RETENTION_STREAM,
            [event.caused("contexten.retention.applied", report.to_dict())],
        )

    def add(self, machine: StateMachine) -> StateMachine:
        """Register a state machine; the events its transitions name drive its instances."""
        return self.workflows.add(machine)

    async def start_workflow(
        self,
        name: str,
        input: Any = None,
        workflow_id: str | None = None,
        *,
        if_exists: Literal["return", "raise"] = "return",
    ) -> WorkflowHandle:
        """Start an instance of workflow ``name``, idempotently: starting an id that exists
        returns the existing instance's handle (or raises ``WorkflowAlreadyStarted`` with
        ``if_exists="raise"``); it never runs twice."""
        with self._bound():
            return await self.workflows.start_workflow(
                name, input, workflow_id, if_exists=if_exists
            )

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """An instance's status, result or error, current step and history."""
        return await self.workflows.get_workflow(workflow_id)

    async def list_workflows(
        self, status: str | None = None, *, name: str | None = None
    ) -> list[WorkflowInfo]:
        """Snapshots of the workflow instances (no result or history), optionally filtered,
        most recently updated first; read from the ``workflows`` read model, caught up first.
        """
        await self.projections.catch_up("workflows")
        return await self.read.workflow_infos(status, name=name)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel an instance: compensate its completed steps, then end it ``cancelled``."""
        return await self.workflows.cancel_workflow(workflow_id)

    async def retry_workflow(self, workflow_id: str) -> WorkflowHandle:
        """Redrive a ``failed`` or ``blocked`` instance on its own version (after a fix)."""
        with self._bound():
            return await self.workflows.retry_workflow(workflow_id)

    async def fork_workflow(self, workflow_id: str, *, cancel_old: bool = False) -> WorkflowHandle:
        """Start a new instance from ``workflow_id``'s input on the newest version, linked to
        it; cancel the old one (with its compensations) when ``cancel_old``."""
        with self._bound():
            return await self.workflows.fork_workflow(workflow_id, cancel_old=cancel_old)

    async def migrate_workflow(
        self, workflow_id: str, to_version: int | str, *, force: bool = False
    ) -> WorkflowHandle:
        """Move a ``blocked`` instance to registered version ``to_version`` and resume it
        there from its last compatible point (verified by replaying its history first);
        ``force`` lets it supersede recorded calls that already made effects (see
        :meth:`~contexten.workflows.WorkflowEngine.migrate`)."""
        with self._bound():
            return await self.workflows.migrate_workflow(workflow_id, to_version, force=force)

    async def plan_migration(self, workflow_id: str, to_version: int | str) -> MigrationPlan:
        """How a ``blocked`` instance would move to registered version ``to_version``: its
        last compatible point, the calls it would supersede and the effects those already
        made (a dry run: records nothing; see
        :meth:`~contexten.workflows.WorkflowEngine.plan_migration`)."""
        with self._bound():
            return await self.workflows.plan_migration(workflow_id, to_version)

    async def migrate(
        self, workflow_id: str, to_version: int | str, *, force: bool = False
    ) -> MigrationPlan:
        """As :meth:`migrate_workflow`, answering the plan that was carried out (what an
        operator is shown: the point, the superseded calls, the effects already made)."""
        with self._bound():
            return await self.workflows.migrate(workflow_id, to_version, force=force)

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self,
        event: Event,
        *,
        stream: str | None = None,
        dedup_key: str | None = None,
        expected_version: ExpectedVersion = StreamState.ANY,
    ) -> AppendResult:
        """Store ``event``; it is dispatched once the store has it.

        Args:
            event: the event.
            stream: the stream to append to (default: ``{source}-{subject or type}``, see
                :func:`contexten.bus.streams.default_stream`).
            dedup_key: a key that makes repeats of this publish store nothing (and return
                the original position with ``deduplicated=True``).
            expected_version: the stream's expected version (optimistic concurrency).

        Returns:
            Where the event was stored. When this returns, the event is durable (as durable
            as the store is); if it raises, nothing was stored.

        Raises:
            AppNotRunning: the app is not started.
            StoreError: the store could not write it (``StoreUnavailable``), or the expected
                version did not hold (``WrongExpectedVersion``).
        """
        if not self._running:
            raise AppNotRunning("start the app (async with app: ...) before publishing")
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event, not {type(event).__name__}")
        with tracing.publish_span(event):
            event = tracing.inject(event)
            return await self._store.append(
                stream or default_stream(event),
                [event],
                expected_version=expected_version,
                dedup_key=dedup_key,
            )

    async def _store_event(
        self,
        event: Event,
        stream: str | None,
        dedup_key: str | None,
        /,
        lease: LeaseCheckpoint | None = None,
    ) -> AppendResult:
        # Handlers emit through here (fenced by their partition's lease); it works during the
        # shutdown grace period too.
        event = tracing.inject(event)
        return await self._store.append(
            stream or default_stream(event), [event], dedup_key=dedup_key, lease=lease
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, run the startup hooks, start dispatching. Idempotent.

        If nobody configured logging, it is configured now (JSON lines on stderr unless
        stderr is a terminal), so an app's logs never land on stdout among its output.
        """
        if self._running:
            return
        if not structlog.is_configured():
            configure_logging()
        if not tracing.tracing_enabled():
            tracing.configure_tracing()  # from OTEL_* settings; stays off when none are set
        wait = self.store_open_wait
        await open_with_retry(
            self._store, open_wait_from_env(0.0) if wait is None else wait, clock=self.clock
        )
        try:
            await self.projections.open()
            for hook in self._startup:
                await hook()
            await self._start_agents()
            self._running = True
            if self.dispatch:
                with self._bound():  # their tasks keep the app's clients and action log
                    # Each projection is folded by one worker at a time (its lease renewed
                    # by this dispatcher's heartbeat), so register its group first.
                    self._dispatcher.extra_groups = self.projections.lease_groups
                    await self._dispatcher.start()
                    self.projections.start(
                        self.supervisor,
                        worker_id=self._dispatcher.worker_id,
                        leases=self._dispatcher.leases,
                    )
                    if (
                        self.workflows.definitions
                        or self.workflows.machines
                        or self.workflows.schedules.schedules
                    ):
                        await self.workflows.start()
                        self._workflows_started = True
        except BaseException:
            self._running = True  # so that stop() undoes whatever was started
            await self.stop()
            raise
        self._log.info(
            "app started", store=redact_url(self._store.url), subscriptions=len(self.subscriptions)
        )

    async def stop(self) -> None:
        """Stop cleanly: stop reading, let in-flight handlers finish within
        ``shutdown_grace`` (cancel and leave the rest for redelivery), save checkpoints, run
        the shutdown hooks, stop supervised tasks, close the store (if the app owns it)."""
        if not self._running:
            return
        self._running = False
        try:
            await self.projections.stop()  # hands its projections to the other workers
            await self._dispatcher.stop(self.shutdown_grace)
            if self._workflows_started:
                self._workflows_started = False
                await self.workflows.stop()
            if CODEGEN_WATCHER in self.supervisor:
                await self.supervisor.stop(CODEGEN_WATCHER)  # before its clients close
            if self._runtime is not None:
                try:
                    await self._runtime.stop()
                except Exception as e:
                    self._log.error("closing the platform clients failed", exc_info=e)
            for hook in reversed(self._shutdown):
                try:
                    await hook()
                except Exception as e:
                    self._log.error("shutdown hook failed", hook=_name_of(hook), exc_info=e)
            await self.supervisor.stop()
        finally:
            try:
                await self.projections.close()
            finally:
                if self._owns_store:
                    await self._store.close()
        self._log.info("app stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every subscription has handled (or parked) every event stored so far,
        including events its handlers emit meanwhile, and save the checkpoints; then fold
        the read models up to the log's head.

        Raises:
            AppNotRunning: the app is not running (or does not dispatch).
            TimeoutError: ``timeout`` seconds passed first.
        """
        async with asyncio.timeout(timeout):
            await self._dispatcher.drain()
            await self.projections.catch_up()

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set, or SIGINT/SIGTERM arrives (when it can listen for them)."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signal support on this platform
        try:
            async with self:
                await stop.wait()
                self._log.info("stopping")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def run(self) -> None:
        """Run the app until SIGINT or SIGTERM, then stop cleanly (for scripts and
        ``contexten worker``).

        It owns the process, so it runs as ``contexten serve`` does: on uvloop when installed
        and with the garbage collector tuned for a long-running server (see
        :mod:`contexten.event_loop`). Configures logging (JSON lines unless on a terminal) if
        nobody has. A Contexten error that stops the app (an unreadable or corrupt store...)
        ends the process with status 1 and a one-line message rather than a traceback.
        """
        if not structlog.is_configured():
            configure_logging()
        try:
            with serving_gc():
                event_loop.run(self.serve())
        except ContextenError as e:
            self._log.error("app failed", error_type=type(e).__name__)
            raise SystemExit(f"error: {e}") from None

    async def health(self) -> HealthReport:
        """How each part is: store reachability, each subscription's lag and state, the
        dead-letter queue's size and the blocked workflow instances (exact, from the read
        models; a blocked instance does not make the app unready), each projection's lag,
        supervisor restarts, (once agents are in use) each agent's availability and circuit
        breaker, and each relay's connection and lag (:meth:`relay_to_nats`)."""
        return await check_health(
            store=self._store,
            dispatcher=self._dispatcher,
            dead_letters=self.read.open_dead_letters,
            blocked_workflows=self._blocked_workflows,
            projections=self._projection_health,
            supervisor=self.supervisor,
            running=self._running,
            workflow_loops=self.workflows.loop_statuses() if self._workflows_started else (),
            workflows_ready=self.workflows.ready or not self._workflows_started,
            agents=self._runtime.health() if self._runtime is not None else None,
            relays=self._relay_health if self._relays else None,
        )

    async def _blocked_workflows(self) -> int:
        return await self.read.count_workflows(WorkflowStatus.BLOCKED.value)

    async def _projection_health(self) -> list[ProjectionHealth]:
        return [
            ProjectionHealth(s.name, s.state, s.position, s.lag, s.stale, s.last_error)
            for s in await self.projections.status()
        ]

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"App(store={redact_url(self._store.url)!r}, {state})"


@dataclasses.dataclass(frozen=True, slots=True)
class _Pinned:
    store: EventStore
    clock: Clock
    agents: Any


_PINNED: Final[contextvars.ContextVar[_Pinned | None]] = contextvars.ContextVar(
    "contexten_app_pinned", default=None
)


@contextlib.contextmanager
def pinned_apps(store: EventStore, clock: Clock, agents: Any) -> Iterator[None]:
    """Every :class:`App` built inside the block uses ``store``, ``clock`` and ``agents`` (a
    client registry or agent manager), whatever its code passes; later ``use_agents`` calls
    are ignored. For tools that load a user's app to run it somewhere else: shadow replay
    runs it on a memory store, a virtual clock and the sandbox, so nothing it does reaches
    a real platform."""
    token = _PINNED.set(_Pinned(store, clock, agents))
    try:
        yield
    finally:
        _PINNED.reset(token)


def _legacy_names(handler: Callable[..., Any], name: str) -> tuple[str, ...]:
    """The default name the handler had before names followed files (``module.qualname``,
    ``__main__.triage`` for ``python app.py``), if different: its checkpoint is inherited."""
    old = f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', '')}"
    return (old,) if old != name and not old.startswith(".") else ()


def _name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))
