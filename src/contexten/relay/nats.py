"""The NATS JetStream relay: every committed event, published to JetStream (an outbox).

Other services in a team's stack consume Contexten's events from JetStream instead of polling
its API. The store stays the source of truth; the relay only copies from it:

* **A subscription like any other.** The relay is a subscription (``relay.nats.{STREAM}``) run
  by the App's dispatcher, so it gets the dispatcher's machinery as it is: its events are
  split into partitions by ordering key, each partition is relayed by one process at a time
  (leases, fencing: see :mod:`contexten.bus.partitions`), each has its checkpoint in the
  store, and the reader and checkpoint loops run under the App's supervisor.
* **Publish, await the ack, then checkpoint.** The handler returns only once JetStream
  acknowledged the message (its ``PubAck``), and a partition's checkpoint moves only over
  events whose handler returned. After a crash, a ``kill -9``, a lost lease or a NATS outage,
  relaying resumes from the checkpoint: every event reaches JetStream at least once.
* **Duplicates removed by JetStream.** Every message carries ``Nats-Msg-Id`` = the event id,
  so JetStream stores a re-published event once (and acks it as a duplicate) as long as it
  comes back within the stream's duplicate window (``duplicate_window``, 2 minutes by
  default). Only the events acknowledged but not yet checkpointed when the relay died are
  published again (``checkpoint_interval`` worth, 50 ms by default), so this window is what
  matters if a relay stays down longer than it: consumers that must never see a duplicate
  dedup on the CloudEvents ``id`` as well.
* **Order per key.** Events with the same ordering key (correlation id, else subject) are
  published one at a time in log order, the next only after the previous one's ack, so
  their order in the stream is their order in the log; different keys go in parallel.
* **Failures.** NATS unreachable, a timeout before the ack, the stream missing: the attempt
  fails with :class:`~contexten.exceptions.RelayUnavailable` and is retried with backoff (up
  to every 10 s) for as long as it takes; nothing is dead-lettered for an outage, and the
  relay's lag shows in ``App.health()`` and ``/metrics``. A message JetStream refuses for good
  (larger than the server's ``max_payload``) fails with
  :class:`~contexten.exceptions.RelayRejected` and is parked in the dead-letter queue with
  that reason, to be redriven once the limit is raised.
* **What is relayed.** Events whose type matches the relay's patterns (default ``**``: all),
  echoes of our own actions included; never the ``$``-prefixed system streams (the audit
  trail, token records, dead letters, workflow internals). The subject and message format
  are in :mod:`contexten.relay.wire`.

The stream (``CONTEXTEN`` by default, subjects ``{prefix}.>``, file storage) is created on
first use if it does not exist; an existing stream is used as it is, if its subjects cover
``{prefix}.>``. How durable an acknowledged message is then depends on the NATS server's
``sync_interval`` (see the README).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from contexten.bus.context import HandlerContext
from contexten.bus.partitions import subscription_checkpoint
from contexten.bus.subscription import Subscription, default_key
from contexten.events.envelope import Event
from contexten.exceptions import (
    ConfigurationError,
    InvalidEvent,
    RelayRejected,
    RelayUnavailable,
)
from contexten.observability.logging import get_logger
from contexten.relay.wire import SUBJECT_PREFIX, check_subject_prefix, encode_message, subject_for
from contexten.resilience.retry import RetryPolicy
from contexten.store.base import EventStore

try:
    import nats.errors as nats_errors
    import nats.js.errors as js_errors
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.api import PubAck, StorageType, StreamConfig
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        f"the NATS relay needs the nats extra: pip install 'contexten[nats]' ({e})"
    ) from e

__all__ = ["DEFAULT_STREAM", "MSG_ID_HEADER", "RELAY_RETRY", "NatsRelay"]

DEFAULT_STREAM: Final = "CONTEXTEN"
"""The JetStream stream the relay publishes to unless told otherwise."""

MSG_ID_HEADER: Final = "Nats-Msg-Id"
"""JetStream's deduplication header; the relay sets it to the event id."""

RELAY_RETRY: Final = RetryPolicy(
    initial_interval=0.2,
    backoff_coefficient=2.0,
    maximum_interval=10.0,
    maximum_attempts=0,
    non_retryable_error_types=(InvalidEvent,),
)
"""Retry an unavailable broker for as long as it takes (backoff up to 10 s); only a message
refused for good (:class:`~contexten.exceptions.RelayRejected`, or an event that maps to no
subject: :class:`~contexten.exceptions.InvalidEvent`) is parked."""

_STREAM_RE: Final = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_MESSAGE_TOO_LARGE: Final = 10054  # JetStream's "message size exceeds maximum allowed"
_MAX_DESCRIPTION: Final = 200
_CONNECT_BACKOFF: Final = 1.0  # seconds after a failed connect before the next one


def _safe_url(url: str) -> str:
    """``scheme://host:port`` of each server: no user, password or token."""
    shown = []
    for part in url.split(","):
        parsed = urlsplit(part.strip())
        port = f":{parsed.port}" if parsed.port else ""
        shown.append(f"{parsed.scheme or 'nats'}://{parsed.hostname or '?'}{port}")
    return ",".join(shown)


def _describe(error: BaseException) -> str:
    """A short, secret-free account of a NATS error: its type and, for a JetStream API error,
    the server's code and description."""
    if isinstance(error, js_errors.APIError):
        text = f"{type(error).__name__} {error.err_code}: {error.description or ''}".strip()
        return text[:_MAX_DESCRIPTION]
    return type(error).__name__


class NatsRelay:
    """Publishes the store's events to a NATS JetStream stream; see the module docstring.

    Build it with :meth:`App.relay_to_nats <contexten.App.relay_to_nats>`, which registers
    :meth:`subscription` with the App's dispatcher and closes the connection at shutdown.

    Args:
        url: the NATS server(s), ``nats://host:4222`` (comma-separated for a cluster; user,
            password or token in the URL are used but never shown).
        stream: the JetStream stream's name (letters, digits, ``_``, ``-``).
        patterns: which event types to relay (default ``**``: every type).
        subject_prefix: the subjects' first token(s): ``{prefix}.{type}``.
        name: the relay's subscription name (default ``relay.nats.{stream}``); its
            checkpoints are stored under it, so keep it stable.
        duplicate_window: seconds JetStream remembers message ids, for a stream the relay
            creates (an existing stream keeps its own).
        publish_timeout: seconds to wait for a JetStream ack before the attempt fails.
        connect_timeout: seconds one connection attempt may take.
        concurrency: messages awaiting their ack at once (distinct ordering keys).
        start: ``"beginning"`` relays the whole log the first time; ``"now"`` only what is
            stored from then on.

    Raises:
        ConfigurationError: a bad stream name, prefix, pattern or option.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        patterns: str | Sequence[str] = "**",
        subject_prefix: str = SUBJECT_PREFIX,
        name: str | None = None,
        duplicate_window: float = 120.0,
        publish_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        concurrency: int = 100,
        start: str = "beginning",
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError("the NATS relay needs a server URL (nats://host:4222)")
        if start not in ("beginning", "now"):
            raise ConfigurationError("NATS relay: start must be 'beginning' or 'now'")
        if not isinstance(stream, str) or not _STREAM_RE.match(stream):
            raise ConfigurationError(
                f"JetStream stream name {stream!r}: 1 to 64 letters, digits, '_' or '-'"
            )
        for label, value in (
            ("duplicate_window", duplicate_window),
            ("publish_timeout", publish_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not value > 0:
                raise ConfigurationError(f"NATS relay: {label} must be > 0 seconds")
        self.url = url.strip()
        self.stream = stream
        self.subject_prefix = check_subject_prefix(subject_prefix)
        self.name = name or f"relay.nats.{stream}"
        self.duplicate_window = float(duplicate_window)
        self.publish_timeout = float(publish_timeout)
        self.connect_timeout = float(connect_timeout)
        self.published = 0
        """Messages JetStream stored since start."""
        self.duplicates = 0
        """Messages JetStream acked as duplicates (already stored: a re-publish) since start."""
        self.rejected = 0
        """Messages refused for good (parked in the dead-letter queue) since start."""
        self.failures = 0
        """Publish attempts that failed (and were retried) since start."""
        self.last_error: str | None = None
        """The last failure's type (and JetStream's code and description), if any."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._lock = asyncio.Lock()
        self._closing = False
        self._retry_connect_at = 0.0
        self._log = get_logger("contexten.relay", relay=self.name)
        self._subscription = Subscription(
            name=self.name,
            patterns=patterns,
            handler=self._handle,
            retry=RELAY_RETRY,
            concurrency=concurrency,
            timeout=self.connect_timeout + 2 * self.publish_timeout + 5.0,
            key=default_key,
            start="now" if start == "now" else "beginning",
            include_system=False,
            echoes=True,
        )

    @classmethod
    def from_env(cls, url: str | None = None, **options: Any) -> NatsRelay:
        """A relay configured from the environment, explicit arguments first:
        ``CONTEXTEN_NATS_URL``, ``CONTEXTEN_NATS_STREAM`` and ``CONTEXTEN_NATS_PATTERNS``
        (comma-separated type patterns).

        Raises:
            ConfigurationError: no URL given or set, or a bad setting.
        """
        url = url or os.environ.get("CONTEXTEN_NATS_URL")
        if not url:
            raise ConfigurationError(
                "relay_to_nats() needs a URL, or CONTEXTEN_NATS_URL (nats://host:4222)"
            )
        if options.get("stream") is None:
            options["stream"] = os.environ.get("CONTEXTEN_NATS_STREAM") or DEFAULT_STREAM
        if options.get("patterns") is None:
            raw = os.environ.get("CONTEXTEN_NATS_PATTERNS", "")
            options["patterns"] = [p.strip() for p in raw.split(",") if p.strip()] or "**"
        return cls(url, **{k: v for k, v in options.items() if v is not None})

    @property
    def subscription(self) -> Subscription:
        """The subscription that relays: register it with a dispatcher."""
        return self._subscription

    @property
    def subjects(self) -> str:
        """The subjects the relay publishes under (and the stream it creates holds)."""
        return f"{self.subject_prefix}.>"

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up now."""
        return self._nc is not None and self._nc.is_connected

    # -- publishing ------------------------------------------------------------------------

    async def _handle(self, event: Event, ctx: HandlerContext) -> None:
        await self.publish(event, ctx.position)

    async def publish(self, event: Event, position: int) -> PubAck:
        """Publish ``event`` (stored at ``position``) and return JetStream's ack.

        Raises:
            RelayUnavailable: not acknowledged (unreachable, timed out, stream missing): retry.
            RelayRejected: refused for good (too large).
        """
        subject = subject_for(event.type, self.subject_prefix)
        body, headers = encode_message(event, position)
        headers[MSG_ID_HEADER] = event.id
        try:
            js = await self._jetstream()
            ack = await js.publish(
                subject,
                body,
                timeout=self.publish_timeout,
                stream=self.stream,
                headers=headers,
            )
        except nats_errors.MaxPayloadError as e:
            raise self._rejected(e, len(body)) from e
        except js_errors.NoStreamResponseError as e:
            self._stream_ready = False  # deleted under us? ensure it again next time
            raise self._unavailable(e, "no JetStream stream took the message") from e
        except js_errors.APIError as e:
            if e.err_code == _MESSAGE_TOO_LARGE:
                raise self._rejected(e, len(body)) from e
            raise self._unavailable(e, "JetStream refused the message") from e
        except (TimeoutError, OSError, nats_errors.Error) as e:
            raise self._unavailable(e, "no JetStream ack") from e
        if ack.duplicate:
            self.duplicates += 1
        else:
            self.published += 1
        return ack

    def _unavailable(self, error: BaseException, what: str) -> RelayUnavailable:
        self.failures += 1
        self.last_error = _describe(error)
        return RelayUnavailable(f"{what} ({self.last_error}); will retry")

    def _rejected(self, error: BaseException, size: int) -> RelayRejected:
        self.rejected += 1
        self.last_error = _describe(error)
        return RelayRejected(
            f"NATS refused a {size}-byte message ({self.last_error}): raise the server's "
            "max_payload (or the stream's max_msg_size), then redrive the dead letter"
        )

    # -- connection and stream -------------------------------------------------------------

    async def _jetstream(self) -> JetStreamContext:
        """The JetStream context, connecting and ensuring the stream first if needed."""
        js, nc = self._js, self._nc
        if js is not None and self._stream_ready and nc is not None and not nc.is_closed:
            return js
        async with self._lock:
            if self._nc is None or self._nc.is_closed or self._js is None:
                if time.monotonic() < self._retry_connect_at:
                    # Another delivery's attempt just failed: fail fast rather than have every
                    # waiting delivery try (and wait out connect_timeout) in turn.
                    self.failures += 1
                    raise RelayUnavailable(f"NATS is unreachable ({self.last_error}); will retry")
                self._js = await self._connect()
            if not self._stream_ready:
                await self._ensure_stream(self._js)
                self._stream_ready = True
            return self._js

    async def _connect(self) -> JetStreamContext:
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[s.strip() for s in self.url.split(",") if s.strip()],
                    name=f"contexten {self.name}",
                    connect_timeout=max(1, int(self.connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # a relay outlives outages: it never gives up
                    reconnect_time_wait=1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError, nats_errors.Error) as e:
            await self._close_quietly(nc)
            self._retry_connect_at = time.monotonic() + _CONNECT_BACKOFF
            raise self._unavailable(e, f"NATS at {_safe_url(self.url)} is unreachable") from e
        self._nc = nc
        self._log.info("connected to NATS", url=_safe_url(self.url), stream=self.stream)
        return nc.jetstream(timeout=self.publish_timeout)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream if it does not exist; check that an existing one takes our
        subjects (an operator's stream is used as it is, never changed)."""
        try:
            info = await js.stream_info(self.stream)
        except js_errors.NotFoundError:
            info = None
        except (TimeoutError, OSError, nats_errors.Error) as e:
            raise self._unavailable(e, f"could not look up stream {self.stream}") from e
        if info is None:
            config = StreamConfig(
                name=self.stream,
                subjects=[self.subjects],
                storage=StorageType.FILE,
                duplicate_window=self.duplicate_window,
            )
            try:
                await js.add_stream(config)
            except (TimeoutError, OSError, nats_errors.Error) as e:
                raise self._unavailable(e, f"could not create stream {self.stream}") from e
            self._log.info(
                "created the JetStream stream", stream=self.stream, subjects=self.subjects
            )
            return
        subjects = list(info.config.subjects or ())
        if self.subjects not in subjects and ">" not in subjects:
            self.last_error = f"stream {self.stream} does not take {self.subjects}"
            raise RelayUnavailable(
                f"the JetStream stream {self.stream!r} exists with subjects {subjects}, which do "
                f"not include {self.subjects!r}: add it to the stream or choose another stream"
            )

    async def _on_error(self, error: Exception) -> None:
        self.last_error = _describe(error)
        self._log.debug("NATS connection error", error_type=type(error).__name__)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self._log.warning("disconnected from NATS; reconnecting", url=_safe_url(self.url))

    async def _on_reconnected(self) -> None:
        self._log.info("reconnected to NATS", url=_safe_url(self.url))

    async def _close_quietly(self, nc: Client) -> None:
        try:
            await nc.close()
        except Exception as e:  # closing a half-open client: nothing left to do but say so
            self._log.debug("closing a NATS client failed", error_type=type(e).__name__)

    async def close(self) -> None:
        """Close the connection (after the dispatcher stopped: nothing is in flight); a later
        publish connects again (an App started again)."""
        async with self._lock:
            nc, self._nc, self._js = self._nc, None, None
            self._stream_ready = False
        if nc is None:
            return
        self._closing = True
        try:
            await nc.drain()
        except Exception as e:
            self._log.warning("NATS drain at shutdown failed", error_type=type(e).__name__)
            await self._close_quietly(nc)
        finally:
            self._closing = False

    # -- health ----------------------------------------------------------------------------

    async def health(self, store: EventStore) -> dict[str, Any]:
        """The relay's state for ``App.health()``: its connection (opened at the first event
        to relay), counters since start, and its lag, the log entries not yet relayed over
        all its partitions (whichever process holds them): the head minus its lowest
        partition checkpoint."""
        head = await store.head()
        checkpoint = await subscription_checkpoint(store, self.name)
        return {
            "kind": "nats",
            "url": _safe_url(self.url),
            "stream": self.stream,
            "subjects": self.subjects,
            "subscription": self.name,
            "connected": self.connected,
            "lag": max(head - (checkpoint or 0), 0),
            "checkpoint": checkpoint,
            "published": self.published,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "failures": self.failures,
            "last_error": self.last_error,
        }

    def __repr__(self) -> str:
        return f"NatsRelay({_safe_url(self.url)!r}, stream={self.stream!r})"
