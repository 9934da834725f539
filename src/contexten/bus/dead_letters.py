"""The dead-letter queue, event-sourced through the store port.

An event whose handler keeps failing is *parked*: a new stream ``$dlq-{letter_id}`` is started
(expected version: no stream) with one ``contexten.dead_letter.parked`` event that records the
subscription, the failed event's id and position, the error's type and message, the number
of attempts and the first and last failure times. Because it is just events, every backend
has a dead-letter queue, a dead letter survives restarts, and another process (the CLI) can
inspect and act on it without talking to the dispatcher.

What happens next is appended to the same stream, and a letter's status is the fold of it:

* ``contexten.dead_letter.redriven`` (at version 1, so only a parked letter can be redriven,
  and only once, even with two processes racing: the loser gets ``WrongExpectedVersion``).
  The subscription's dispatcher sees it in the log and delivers the original event again
  with a fresh retry budget; failing again parks a new letter.
* ``contexten.dead_letter.discarded`` (at version 1): given up on.
* ``contexten.dead_letter.resolved``: the redriven delivery succeeded.
"""

from __future__ import annotations

import builtins
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from contexten.clock import Clock, WallClock
from contexten.events.envelope import Event
from contexten.events.ids import new_id
from contexten.exceptions import DeadLetterNotFound, WrongExpectedVersion
from contexten.store.base import EventStore, LeaseCheckpoint, RecordedEvent, StreamState

__all__ = [
    "DEAD_LETTER_STREAM_PREFIX",
    "DISCARDED",
    "PARKED",
    "REDRIVEN",
    "RESOLVED",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "park",
]

DEAD_LETTER_STREAM_PREFIX: Final = "$dlq-"
PARKED: Final = "contexten.dead_letter.parked"
REDRIVEN: Final = "contexten.dead_letter.redriven"
DISCARDED: Final = "contexten.dead_letter.discarded"
RESOLVED: Final = "contexten.dead_letter.resolved"
_SOURCE: Final = "contexten"
MAX_ERROR_MESSAGE: Final = 2000


class DeadLetterStatus(enum.Enum):
    """Where a dead letter stands."""

    PARKED = "parked"
    """Waiting for someone to redrive or discard it."""
    REDRIVEN = "redriven"
    """Sent back to its subscription; not (yet) handled successfully."""
    DISCARDED = "discarded"
    RESOLVED = "resolved"
    """Redriven and then handled successfully."""

    def __str__(self) -> str:
        return self.value


_STATUS_BY_TYPE: Final = {
    REDRIVEN: DeadLetterStatus.REDRIVEN,
    DISCARDED: DeadLetterStatus.DISCARDED,
    RESOLVED: DeadLetterStatus.RESOLVED,
}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One parked event, as folded from its ``$dlq-`` stream.

    Attributes:
        id: the letter's id (its stream is ``$dlq-{id}``).
        subscription: the subscription whose handler failed.
        event_id: the failed event (fetch it with ``store.get_event``).
        position: the log position the failed delivery came from.
        event_type: the failed event's type.
        error_type: the last error's class name.
        error_message: the last error's message (cut to 2,000 characters).
        attempts: attempts made before parking.
        first_failure_at: when the first attempt failed.
        last_failure_at: when the last attempt failed.
        parked_at: when the letter was stored.
        status: parked, redriven, discarded or resolved.
        updated_at: when the status last changed.
        redriven_from: the letter this one re-parks after a failed redrive, if any.
    """

    id: str
    subscription: str
    event_id: str
    position: int
    event_type: str
    error_type: str
    error_message: str
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
    parked_at: datetime
    status: DeadLetterStatus
    updated_at: datetime
    redriven_from: str | None = None

    @property
    def stream(self) -> str:
        """The letter's stream in the store."""
        return f"{DEAD_LETTER_STREAM_PREFIX}{self.id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        return {
            "id": self.id,
            "subscription": self.subscription,
            "event_id": self.event_id,
            "position": self.position,
            "event_type": self.event_type,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "first_failure_at": self.first_failure_at.isoformat(),
            "last_failure_at": self.last_failure_at.isoformat(),
            "parked_at": self.parked_at.isoformat(),
            "status": self.status.value,
            "updated_at": self.updated_at.isoformat(),
            "redriven_from": self.redriven_from,
        }


def _letter_id(stream: str) -> str:
    return stream[len(DEAD_LETTER_STREAM_PREFIX) :]


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def fold(records: list[RecordedEvent]) -> DeadLetter | None:
    """Build a letter from its stream's events (None if the stream is not a letter)."""
    if not records or records[0].event.type != PARKED:
        return None
    first = records[0]
    d = first.event.data
    status, updated = DeadLetterStatus.PARKED, first.event.time
    for rec in records[1:]:
        new = _STATUS_BY_TYPE.get(rec.event.type)
        if new is not None:
            status, updated = new, rec.event.time
    return DeadLetter(
        id=_letter_id(first.stream),
        subscription=str(d["subscription"]),
        event_id=str(d["event_id"]),
        position=int(d["position"]),
        event_type=str(d["event_type"]),
        error_type=str(d["error_type"]),
        error_message=str(d["error_message"]),
        attempts=int(d["attempts"]),
        first_failure_at=_time(d["first_failure_at"]),
        last_failure_at=_time(d["last_failure_at"]),
        parked_at=first.event.time,
        status=status,
        updated_at=updated,
        redriven_from=d.get("redriven_from"),
    )


async def park(
    store: EventStore,
    *,
    subscription: str,
    event: Event,
    position: int,
    error: BaseException,
    attempts: int,
    first_failure_at: datetime,
    last_failure_at: datetime,
    now: datetime,
    redriven_from: str | None = None,
    lease: LeaseCheckpoint | None = None,
) -> str:
    """Park ``event`` for ``subscription`` and return the letter's id.

    With a ``lease``, the letter is stored only while the worker still holds the event's
    partition (else :class:`~contexten.exceptions.LeaseLost`): the new owner parks it.

    The append carries the dedup key ``dlq:{subscription}:{position}``: a delivery that is
    parked, then redelivered after a crash (before its checkpoint was saved) and parked again,
    makes one letter, not two. Returns the id of the letter that holds it.
    """
    letter_id = new_id()
    data: dict[str, Any] = {
        "subscription": subscription,
        "event_id": event.id,
        "position": position,
        "event_type": event.type,
        "error_type": type(error).__name__,
        "error_message": str(error)[:MAX_ERROR_MESSAGE],
        "attempts": attempts,
        "first_failure_at": first_failure_at.isoformat(),
        "last_failure_at": last_failure_at.isoformat(),
    }
    if redriven_from is not None:
        data["redriven_from"] = redriven_from
    parked = Event(
        type=PARKED,
        source=_SOURCE,
        subject=subscription,
        time=now,
        data=data,
        correlation_id=event.correlation_id,
        causation_id=event.id,
    )
    result = await store.append(
        f"{DEAD_LETTER_STREAM_PREFIX}{letter_id}",
        [parked],
        expected_version=StreamState.NO_STREAM,
        dedup_key=f"dlq:{subscription}:{position}",
        lease=lease,
    )
    return _letter_id(result.stream)


class DeadLetterQueue:
    """Lists, redrives and discards dead letters through the store; needs no dispatcher.

    Any number of these (in any number of processes) can work on one store: redrive and
    discard are conditional appends, so each letter is redriven or discarded at most once.

    Args:
        store: an open event store.
        clock: where the redrive/discard timestamps come from.
    """

    def __init__(self, store: EventStore, *, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or WallClock()

    async def list(
        self,
        subscription: str | None = None,
        status: DeadLetterStatus | str | None = DeadLetterStatus.PARKED,
        *,
        limit: int = 10_000,
    ) -> builtins.list[DeadLetter]:
        """Letters, oldest first, optionally only one subscription's or one status's.

        ``status=None`` lists every letter whatever its status.
        """
        wanted = DeadLetterStatus(status) if status is not None else None
        letters = []
        for info in await self._store.list_streams(DEAD_LETTER_STREAM_PREFIX, limit=limit):
            letter = fold(await self._store.read_stream(info.stream))
            if letter is None:
                continue
            if subscription is not None and letter.subscription != subscription:
                continue
            if wanted is not None and letter.status is not wanted:
                continue
            letters.append(letter)
        letters.sort(key=lambda letter: (letter.parked_at, letter.id))
        return letters

    async def count(self, subscription: str | None = None) -> int:
        """How many letters are parked (waiting for a decision)."""
        return len(await self.list(subscription))

    async def get(self, letter_id: str) -> DeadLetter:
        """The letter ``letter_id``.

        Raises:
            DeadLetterNotFound: no such letter.
        """
        letter = fold(await self._store.read_stream(f"{DEAD_LETTER_STREAM_PREFIX}{letter_id}"))
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {letter_id!r}")
        return letter

    async def _decide(self, letter_id: str, event_type: str) -> bool:
        letter = await self.get(letter_id)
        if letter.status is not DeadLetterStatus.PARKED:
            return False
        decision = Event(
            type=event_type,
            source=_SOURCE,
            subject=letter.subscription,
            time=self._clock.now(),
            data={
                "letter_id": letter.id,
                "subscription": letter.subscription,
                "event_id": letter.event_id,
            },
        )
        try:
            await self._store.append(letter.stream, [decision], expected_version=1)
        except WrongExpectedVersion:
            return False
        return True

    async def redrive(self, letter_id: str) -> bool:
        """Send the letter's event back to its subscription, once.

        Returns True if this call redrove it, False if the letter was already redriven,
        discarded or resolved (by anyone, in any process).

        Raises:
            DeadLetterNotFound: no such letter.
        """
        return await self._decide(letter_id, REDRIVEN)

    async def redrive_all(self, subscription: str | None = None) -> int:
        """Redrive every parked letter (of ``subscription``); return how many this call did."""
        done = 0
        for letter in await self.list(subscription):
            if await self._decide(letter.id, REDRIVEN):
                done += 1
        return done

    async def discard(self, letter_id: str) -> bool:
        """Give up on a parked letter; False if it was no longer parked.

        Raises:
            DeadLetterNotFound: no such letter.
        """
        return await self._decide(letter_id, DISCARDED)

    async def resolve(self, letter_id: str) -> bool:
        """Mark a redriven letter as handled (the dispatcher calls this).

        Returns False if the letter is not in the redriven state (never redriven, or already
        resolved).

        Raises:
            DeadLetterNotFound: no such letter.
        """
        letter = await self.get(letter_id)
        if letter.status is not DeadLetterStatus.REDRIVEN:
            return False
        resolved = Event(
            type=RESOLVED,
            source=_SOURCE,
            time=self._clock.now(),
            data={"letter_id": letter_id},
        )
        try:
            await self._store.append(
                f"{DEAD_LETTER_STREAM_PREFIX}{letter_id}", [resolved], expected_version=2
            )
        except WrongExpectedVersion:
            return False
        return True
