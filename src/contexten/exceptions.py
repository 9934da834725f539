"""The exceptions Contexten raises, all under one root.

Callers can catch :class:`ContextenError` to handle anything Contexten raises on purpose;
adapters translate driver errors at their edge (``raise StoreUnavailable(...) from e``) so
no ``sqlite3`` or ``asyncpg`` exception leaks through a port.

The tree::

    ContextenError
    ├── ConfigurationError          bad URL, unknown scheme, missing extra, bad option
    │   └── AppLoadError            ``--app`` names no importable module, file or App
    ├── EventError
    │   ├── InvalidEvent            an envelope or payload that breaks the rules
    │   └── InvalidPattern          a type pattern that does not parse
    ├── StoreError
    │   ├── StoreUnavailable        the store cannot be reached or written (disk full, locked)
    │   ├── StoreCorrupted          the file is not a Contexten store, or is damaged
    │   ├── SchemaVersionError      written by a newer (or unknown) schema version
    │   ├── WrongExpectedVersion    optimistic concurrency: the stream is not where the caller
    │   │                           said it was; nothing of the batch was written
    │   ├── LeaseLost               fencing: the caller no longer holds the partition's lease
    │   │                           (owner or epoch moved on); nothing was written
    │   ├── PartitionsHeld          a reset met live leases (nothing moved; --force revokes)
    │   └── StoreClosed             used after close()
    ├── CacheError                  a cache backend refused an operation (bad reply, wrong type)
    │   └── CacheUnavailable        the cache cannot be reached (connect error, timeout, loading)
    ├── DispatchError
    │   ├── HandlerTimeout          a handler ran past its timeout
    │   └── HandlerCancelled        a handler was cancelled (not by shutdown)
    ├── AppNotRunning               App used before start (or after stop)
    ├── NonRetryableError           raised by user code: fail now, do not retry
    ├── PlatformError               an outbound call to GitHub, Linear, Slack or Codegen failed
    │   ├── PlatformRequestError    the platform refused the request (4xx, ``ok: false``, GraphQL
    │   │   │                       errors): non-retryable, carries the platform's message
    │   │   └── PlatformNotFound    the object does not exist (404, ``not_found``...)
    │   ├── RateLimited             throttled, and waiting would pass the caller's deadline
    │   ├── PlatformUnavailable     transient: connect error, timeout, reset, 5xx
    │   │   └── CircuitOpen         the breaker is open: failing fast without calling
    │   └── SSRFBlocked             the target host or address is not allowed: nothing was sent
    ├── IngressError                a webhook request refused at the door: nothing is stored
    │   ├── SignatureInvalid        missing, wrong or stale signature or timestamp (401)
    │   ├── PayloadTooLarge         the body passes its route's size cap (413)
    │   ├── MalformedPayload        not JSON, not UTF-8, too deep, huge numbers, not an object (400)
    │   ├── BodyTimeout             the body did not arrive in time (408)
    │   └── Overloaded              too many requests already wait on the store: shed (429)
    ├── BulkheadFull                too many callers already queued for a bounded resource
    ├── AgentError
    │   ├── AgentNotFound           no agent is registered under that name
    │   └── NoAgentAvailable        no registered agent can take the task now
    ├── WorkflowError
    │   ├── WorkflowNotFound        no workflow instance has that id
    │   ├── WorkflowNotRegistered   no workflow or state machine is registered under that name
    │   ├── WorkflowAlreadyStarted  start asked to raise, and an instance with that id exists
    │   ├── NondeterminismError     a replay diverged from the recorded history: instance parked
    │   ├── MigrationRefused        a migration would supersede effects already made (unforced),
    │   │                           or cannot take over a compensation: nothing was recorded
    │   ├── WorkflowTimeoutError    a ``wf.wait_for`` deadline passed (also a ``TimeoutError``)
    │   ├── StepTimeout             a step attempt ran past its timeout (also a ``TimeoutError``)
    │   ├── WorkflowCancelled       raised inside a workflow that is being cancelled
    │   ├── StepFailedError         a step failed after its retries (recorded type and message)
    │   ├── ChildWorkflowError      a child workflow ended without completing
    │   └── WorkflowFailedError     ``handle.result()``: the instance ended without completing
    ├── DeadLetterError
    │   └── DeadLetterNotFound
    ├── ProjectionError
    │   ├── ProjectionNotFound      no projection is registered under that name
    │   └── ProjectionConflict      a projection's checkpoint moved under a batch (retry)
    ├── RelayError                  relaying events to another system (NATS JetStream) failed
    │   ├── RelayUnavailable        transient: unreachable, timed out, no ack, stream missing
    │   └── RelayRejected           refused for good (too large): non-retryable, dead-lettered
    └── SecurityError
        └── TokenNotFound           no API token has that id
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgentNotFound",
    "AppLoadError",
    "AppNotRunning",
    "BodyTimeout",
    "BulkheadFull",
    "CacheError",
    "CacheUnavailable",
    "ChildWorkflowError",
    "CircuitOpen",
    "ConfigurationError",
    "ContextenError",
    "DeadLetterError",
    "DeadLetterNotFound",
    "DispatchError",
    "EventError",
    "HandlerCancelled",
    "HandlerTimeout",
    "IngressError",
    "InvalidEvent",
    "InvalidPattern",
    "LeaseLost",
    "MalformedPayload",
    "MigrationRefused",
    "NoAgentAvailable",
    "NonRetryableError",
    "NondeterminismError",
    "Overloaded",
    "PartitionsHeld",
    "PayloadTooLarge",
    "PlatformError",
    "PlatformNotFound",
    "PlatformRequestError",
    "PlatformUnavailable",
    "ProjectionConflict",
    "ProjectionError",
    "ProjectionNotFound",
    "RateLimited",
    "RelayError",
    "RelayRejected",
    "RelayUnavailable",
    "SSRFBlocked",
    "SchemaVersionError",
    "SecurityError",
    "SignatureInvalid",
    "StepFailedError",
    "StepTimeout",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreUnavailable",
    "TokenNotFound",
    "WorkflowAlreadyStarted",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowNotFound",
    "WorkflowNotRegistered",
    "WorkflowTimeoutError",
    "WrongExpectedVersion",
]


class ContextenError(Exception):
    """Root of every exception Contexten raises on purpose."""


class ConfigurationError(ContextenError):
    """The configuration cannot work: an unknown URL scheme, a missing extra, a bad option."""


class AppLoadError(ConfigurationError):
    """``contexten serve --app`` names no importable module or file, or no App in it."""


class EventError(ContextenError):
    """Something is wrong with an event or a pattern."""


class InvalidEvent(EventError):
    """An event envelope or its JSON form breaks the rules (missing type, bad field...)."""


class InvalidPattern(EventError):
    """A type pattern does not parse (empty segment, ``**`` not at the end, bad characters)."""


class StoreError(ContextenError):
    """Base of every event-store error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written: the caller must treat the write as not done."""


class StoreCorrupted(StoreError):
    """The store's file exists but is not a Contexten store, or is damaged."""


class SchemaVersionError(StoreError):
    """The store was written by a schema version this code cannot read or migrate."""


class StoreClosed(StoreError):
    """The store was used after it was closed."""


class WrongExpectedVersion(StoreError):
    """An append's expected version did not hold; nothing of the batch was written.

    Attributes:
        stream: the stream whose expectation failed.
        expected: what the caller expected (a version or a :class:`StreamState`).
        actual: the stream's version when the append was tried (0: no stream).
    """

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, actual {actual}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class LeaseLost(StoreError):
    """A fenced write named a partition lease the caller no longer holds; nothing was written.

    Another worker claimed the partition (a new epoch) or it was released: the caller must
    stop delivering that partition; its in-flight events are delivered again by the new owner.

    Attributes:
        group: the subscription the partition belongs to.
        partition: the partition's number.
    """

    def __init__(self, group: str, partition: int, detail: str = "") -> None:
        super().__init__(
            f"subscription {group!r} partition {partition}: the lease is lost"
            + (f" ({detail})" if detail else "")
        )
        self.group = group
        self.partition = partition


class PartitionsHeld(StoreError):
    """A subscription reset met partitions held by live leases; nothing was moved.

    Attributes:
        group: the subscription.
        owners: the workers holding its partitions.
    """

    def __init__(self, group: str, owners: list[str]) -> None:
        shown = ", ".join(owners[:5]) + (" ..." if len(owners) > 5 else "")
        super().__init__(
            f"subscription {group!r} has partitions held by running workers ({shown}); "
            "stop them, or force the reset (their leases are revoked and they resume from "
            "the new position at their next heartbeat)"
        )
        self.group = group
        self.owners = owners


class CacheError(ContextenError):
    """Base of cache errors; a cache backend refused or failed an operation."""


class CacheUnavailable(CacheError):
    """The cache backend cannot be reached (connection refused or reset, timeout, loading).

    A cache is never the source of truth: :class:`~contexten.cache.MultiLevelCache` counts
    this error and carries on without the level that raised it.
    """


class DispatchError(ContextenError):
    """Base of errors raised by the dispatcher about handler execution."""


class HandlerTimeout(DispatchError):
    """A handler ran longer than its subscription's timeout and was cancelled."""


class HandlerCancelled(DispatchError):
    """A handler's attempt ended in cancellation that did not come from shutdown."""


class AppNotRunning(ContextenError):
    """The App was used in a way that needs it started (``async with app:``) first."""


class NonRetryableError(ContextenError):
    """Raise (or subclass) this from a handler or step to fail at once, without retries.

    Any exception with a truthy ``non_retryable`` attribute is treated the same way, so
    platform errors can opt out of retries without inheriting from this class.
    """

    non_retryable = True


class PlatformError(ContextenError):
    """An outbound call to a platform (GitHub, Linear, Slack, Codegen) failed.

    Attributes:
        platform: ``"github"``, ``"linear"``, ``"slack"`` or ``"codegen"``.
        status: the HTTP status when there was a response, else ``None``.
        code: the platform's machine-readable error code when it gave one
            (Slack's ``error``, Linear's ``extensions.code``), else ``None``.
        maybe_applied: the request may have reached the platform and taken effect before
            the failure (a reset after sending, a 5xx): retrying a create is only safe with
            an idempotency key.
    """

    maybe_applied: bool = False

    def __init__(
        self,
        message: str,
        *,
        platform: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{platform}: {message}" if platform else message)
        self.message = message
        self.platform = platform
        self.status = status
        self.code = code


class PlatformRequestError(PlatformError):
    """The platform refused the request as invalid; retrying the same request cannot help."""

    non_retryable = True


class PlatformNotFound(PlatformRequestError):
    """The object the request names does not exist (or the credential cannot see it)."""


class RateLimited(PlatformError):
    """The platform throttles this credential and the caller cannot wait long enough.

    Attributes:
        retry_after: seconds after which a new attempt may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        platform: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, platform=platform, status=status, code=code)
        self.retry_after = retry_after


class PlatformUnavailable(PlatformError):
    """A transient failure: the platform could not be reached or answered 5xx."""


class CircuitOpen(PlatformUnavailable):
    """The circuit breaker is open: the call failed fast, nothing was sent.

    Attributes:
        breaker: the breaker's name.
        retry_after: seconds until the breaker lets a trial call through.
    """

    def __init__(self, breaker: str, retry_after: float, *, platform: str = "") -> None:
        super().__init__(
            f"circuit {breaker!r} is open; next trial call in {retry_after:.1f}s",
            platform=platform,
        )
        self.breaker = breaker
        self.retry_after = retry_after


class SSRFBlocked(PlatformError):
    """The request's target is not an allowed API host or resolves to a refused address."""

    non_retryable = True


class IngressError(ContextenError):
    """A webhook request refused at the front door; nothing of it is stored.

    Attributes:
        status_code: the HTTP status the ingress answers with.
    """

    status_code: int = 400


class SignatureInvalid(IngressError):
    """The request's signature (or its signed timestamp) is missing, wrong or stale.

    The message names the reason for the log; it never carries a signature or a secret, and
    the client only ever sees a bare 401.
    """

    status_code = 401


class PayloadTooLarge(IngressError):
    """The body is bigger than its route allows (announced or while streaming)."""

    status_code = 413


class MalformedPayload(IngressError):
    """The body is not acceptable JSON (or form) for its platform."""

    status_code = 400


class BodyTimeout(IngressError):
    """The client did not send the whole body within the read deadline."""

    status_code = 408


class Overloaded(IngressError):
    """Too many requests already wait on the store's write path: the request is shed (429,
    with ``Retry-After``) rather than queued without bound."""

    status_code = 429


class BulkheadFull(ContextenError):
    """A bulkhead's concurrency and queue are both full; the caller was not admitted."""


class DeadLetterError(ContextenError):
    """Base of dead-letter queue errors."""


class DeadLetterNotFound(DeadLetterError):
    """No dead letter has that id."""


class ProjectionError(ContextenError):
    """Base of read-model (projection) errors."""


class ProjectionNotFound(ProjectionError):
    """No projection is registered under that name."""


class ProjectionConflict(ProjectionError):
    """A batch's checkpoint compare-and-swap failed: another runner (or a rebuild) moved the
    projection on. Nothing of the batch was written; the runner reads the checkpoint again."""


class RelayError(ContextenError):
    """Relaying stored events to another system (NATS JetStream) failed; the event stays in
    the store and its relay checkpoint does not move past it."""


class RelayUnavailable(RelayError):
    """The broker could not take the event now (unreachable, timed out before its ack, its
    stream missing): retried with backoff until it does."""


class RelayRejected(RelayError):
    """The broker refused the event for good (larger than its maximum message size): not
    retried; the event is parked in the dead-letter queue with this reason, to be redriven
    once the limit is raised."""

    non_retryable = True


class AgentError(ContextenError):
    """Base of agent manager and routing errors."""


class AgentNotFound(AgentError, KeyError):
    """No agent is registered under that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "agent not found"


class NoAgentAvailable(AgentError):
    """No registered agent offers the task's capability, or every one that does is unhealthy
    (its circuit breaker is open); retryable: an agent may recover."""


class WorkflowError(ContextenError):
    """Base of workflow-engine errors."""


class WorkflowNotFound(WorkflowError):
    """No workflow instance has that id."""


class WorkflowNotRegistered(WorkflowError):
    """No workflow (or state machine) is registered under that name in this engine."""


class WorkflowAlreadyStarted(WorkflowError):
    """A start asked to raise (``if_exists="raise"``) found an instance with that id.

    Attributes:
        workflow_id: the id that is taken.
    """

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} was already started")
        self.workflow_id = workflow_id


class NondeterminismError(WorkflowError):
    """Replaying a workflow diverged from its recorded history.

    The workflow code asked for something (a step, timer, wait...) other than what the history
    recorded at the same position, usually because the code changed under an in-flight
    instance. The engine blocks the instance (status ``blocked``) instead of corrupting it.

    Attributes:
        workflow_id: the instance.
        seq: the position (durable-call number) where replay diverged.
        expected: what the history recorded there (``step 'charge'``), when known.
        produced: what the code asked for instead (``timer``, ``return``...), when known.
    """

    def __init__(
        self,
        workflow_id: str,
        seq: int,
        message: str,
        *,
        expected: str | None = None,
        produced: str | None = None,
    ) -> None:
        super().__init__(f"workflow {workflow_id!r}, call #{seq}: {message}")
        self.workflow_id = workflow_id
        self.seq = seq
        self.expected = expected
        self.produced = produced


class MigrationRefused(WorkflowError):
    """A blocked instance was not migrated; nothing was recorded.

    The new version does not replay the whole history, and the calls it would supersede
    already made effects outside the instance (pass ``force=True`` / ``--force`` to move it
    anyway), or the instance was compensating (never moved partway).

    Attributes:
        workflow_id: the instance.
        point: the last call the new version reproduces.
        effects: what the superseded calls already did, one line each.
        forceable: whether ``force`` would let the migration through.
    """

    def __init__(
        self,
        workflow_id: str,
        message: str,
        *,
        point: int,
        effects: list[str],
        forceable: bool,
    ) -> None:
        super().__init__(f"workflow {workflow_id!r} was not migrated: {message}")
        self.workflow_id = workflow_id
        self.point = point
        self.effects = effects
        self.forceable = forceable


class WorkflowTimeoutError(WorkflowError, TimeoutError):
    """A ``wf.wait_for`` reached its deadline before a matching event came.

    Raised inside the workflow, which may catch it and carry on.
    """


class StepTimeout(WorkflowError, TimeoutError):
    """One attempt of a workflow step (or compensation, or action) ran past its timeout.

    The attempt is abandoned (its task cancelled) and counts as a failure, which the step's
    retry policy may retry; the history records this type when the retries run out.
    """


class WorkflowCancelled(WorkflowError):
    """Raised at a durable call of a workflow whose cancellation was requested.

    Catching it does not stop the cancellation: the engine still compensates and ends the
    instance ``cancelled``.
    """


class StepFailedError(WorkflowError):
    """A workflow step failed after its retries, as recorded in the history.

    The same error is raised live and on replay, so workflow code sees one type either way.

    Attributes:
        step: the step's name.
        error_type: qualified class name of the step's last exception.
        error_message: its message.
        attempts: how many attempts were made.
    """

    def __init__(self, step: str, error_type: str, error_message: str, attempts: int) -> None:
        super().__init__(
            f"step {step!r} failed after {attempts} attempt(s): {error_type}: {error_message}"
        )
        self.step = step
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts


class ChildWorkflowError(WorkflowError):
    """A child workflow ended ``failed``, ``compensated`` or ``cancelled``.

    Attributes:
        workflow_id: the child's id.
        status: how it ended.
        error: the recorded error, if any.
    """

    def __init__(self, workflow_id: str, status: str, error: object) -> None:
        super().__init__(f"child workflow {workflow_id!r} ended {status}: {error}")
        self.workflow_id = workflow_id
        self.status = status
        self.error = error


class WorkflowFailedError(WorkflowError):
    """The workflow instance ended without completing (failed, compensated or cancelled).

    Attributes:
        workflow_id: the instance.
        status: ``failed``, ``compensated`` or ``cancelled``.
        error: the recorded error (a dict with ``type`` and ``message``), if any.
    """

    def __init__(self, workflow_id: str, status: str, error: object) -> None:
        super().__init__(f"workflow {workflow_id!r} ended {status}: {error}")
        self.workflow_id = workflow_id
        self.status = status
        self.error = error


class SecurityError(ContextenError):
    """Something about tokens, roles or access went wrong."""


class TokenNotFound(SecurityError):
    """No API token has that id (``contexten tokens revoke``)."""
