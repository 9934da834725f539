"""``POST /api/v1/events``: other services publish CloudEvents 1.0 into the log over HTTP.

Both content modes of the CloudEvents HTTP binding are accepted:

* **structured**: ``Content-Type: application/cloudevents+json``, the body is the whole
  event as a JSON object (``specversion``, ``id``, ``source``, ``type``, ``data``...);
* **binary**: the attributes travel as ``ce-*`` headers (``ce-specversion``, ``ce-id``,
  ``ce-source``, ``ce-type``, optional ``ce-subject``, ``ce-time`` and the extensions
  ``ce-correlationid``, ``ce-causationid``, ``ce-deliveryid``, ``ce-actor``,
  ``ce-traceparent``); the body is ``data``, a JSON object (``Content-Type:
  application/json``; an empty body is ``{}``).

Batched mode, ``data_base64`` and non-JSON data are refused: Contexten events carry JSON
object data. Unknown attributes are refused too rather than dropped (nothing is silent).

The event goes through the webhooks' durable path: ONE store commit with a dedup key, and
only then an answer. Answers:

* ``201`` ``{"status": "stored", "id", "position", "stream"}``: stored now;
* ``200`` ``{"status": "duplicate", ...}``: an event with the same ``(source, id)`` was
  published before (CloudEvents says such events are the same); nothing is stored, and the
  answer names the original's position. A publisher retrying after a lost answer gets a
  success, as a platform redelivering a webhook does;
* ``400`` bad input (the detail says which attribute and why), ``413`` over
  ``IngressConfig.publish_max_body``, ``415`` not a CloudEvents content type, ``409`` the id
  is taken by an event of another source, ``503`` the store failed (retry; nothing stored).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contexten.events.cloudevents import SPEC_VERSION, from_cloudevent
from contexten.events.codec import encode_json
from contexten.events.envelope import Event
from contexten.exceptions import IngressError, InvalidEvent
from contexten.ingress.body import read_body
from contexten.ingress.config import IngressConfig
from contexten.ingress.jsonsafe import loads_object
from contexten.observability import tracing
from contexten.observability.logging import get_logger
from contexten.security.audit import audit_type, record_audit
from contexten.security.middleware import principal_of
from contexten.store.base import Append, EventStore

__all__ = ["ATTRIBUTES", "STRUCTURED", "EventPublisher", "UnsupportedMediaType", "decode_request"]

STRUCTURED: Final = "application/cloudevents+json"
"""The content type of a structured-mode CloudEvent."""
ATTRIBUTES: Final = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "correlationid",
        "causationid",
        "deliveryid",
        "actor",
        "traceparent",
    }
)
"""The attributes an event may carry (besides ``data``); anything else is refused."""
_MAX_ATTRIBUTE: Final = 1024
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_log = get_logger("contexten.ingress.publish")


class UnsupportedMediaType(IngressError):
    """Neither a structured CloudEvent nor a binary one with JSON data (415)."""

    status_code = 415


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _check_attributes(obj: Mapping[str, Any]) -> None:
    unknown = sorted(set(obj) - ATTRIBUTES - {"data"})
    if "data_base64" in unknown:
        raise InvalidEvent("data_base64 is not accepted: data must be a JSON object")
    if unknown:
        raise InvalidEvent(f"unknown CloudEvent attribute(s): {', '.join(unknown[:10])}")
    for name, value in obj.items():
        if name == "data":
            continue
        if not isinstance(value, str):
            raise InvalidEvent(f"CloudEvent attribute {name!r} must be a string")
        if len(value) > _MAX_ATTRIBUTE:
            raise InvalidEvent(f"CloudEvent attribute {name!r} is longer than {_MAX_ATTRIBUTE}")
        if _CONTROL.search(value):
            raise InvalidEvent(f"CloudEvent attribute {name!r} holds a control character")
    media = obj.get("datacontenttype")
    if media is not None and not _is_json(_media_type(media)):
        raise InvalidEvent("datacontenttype must be JSON (application/json)")


def decode_request(headers: Mapping[str, str], body: bytes) -> Event:
    """The event a CloudEvents HTTP request carries (structured or binary mode).

    Raises:
        UnsupportedMediaType: neither mode (batched mode included).
        MalformedPayload: the body is not acceptable JSON.
        InvalidEvent: a missing or bad attribute, or data that is not a JSON object.
    """
    media = _media_type(headers.get("content-type"))
    if "ce-specversion" in headers:
        if body.strip() and not _is_json(media):
            raise UnsupportedMediaType(
                "binary mode needs JSON data (Content-Type: application/json)"
            )
        obj: dict[str, Any] = {
            name[3:]: value for name, value in headers.items() if name.startswith("ce-")
        }
        if "datacontenttype" in obj:
            raise InvalidEvent("binary mode states the data's type in Content-Type, not ce-")
        obj["data"] = loads_object(body) if body.strip() else {}
    elif media == STRUCTURED:
        obj = loads_object(body)
    else:
        raise UnsupportedMediaType(
            f"send {STRUCTURED} (structured mode) or ce-* headers with JSON data (binary mode)"
        )
    if obj.get("specversion") != SPEC_VERSION:
        raise InvalidEvent(f"specversion must be {SPEC_VERSION!r}")
    _check_attributes(obj)
    return from_cloudevent(obj)


def dedup_key(event: Event) -> str:
    """The dedup key of a published CloudEvent: its ``(source, id)``."""
    digest = hashlib.sha256(encode_json([event.source, event.id])).hexdigest()
    return f"cloudevent:{digest}"


class EventPublisher:
    """The handler of ``POST /api/v1/events`` (module docstring)."""

    def __init__(
        self, store: EventStore, config: IngressConfig, stream_for: Callable[[Event], str]
    ) -> None:
        self.store = store
        self.config = config
        self.stream_for = stream_for

    async def publish(self, request: Request) -> Response:
        """Validate, store once, answer with where the event landed."""
        try:
            body = await read_body(
                request, limit=self.config.publish_max_body, timeout=self.config.body_timeout
            )
            event = decode_request(request.headers, body)
        except IngressError as e:
            return _error(e.status_code, str(e))
        except InvalidEvent as e:
            return _error(400, str(e))
        stream = self.stream_for(event)
        try:
            # A publisher's own traceparent is kept; else the event starts a trace here.
            with tracing.publish_span(event):
                event = tracing.inject(event)
                results = await self.store.commit(
                    [Append(stream, [event])], dedup_key=dedup_key(event)
                )
        except InvalidEvent as e:
            # The id is stored already, under another source (same source: a dedup hit).
            await self._audit(request, "conflict", event, str(e))
            return _error(409, f"event id {event.id!r} is taken by an event of another source")
        except Exception as e:  # whatever broke, nothing is acknowledged
            _log.error("published event not stored: store failed", error=type(e).__name__)
            return JSONResponse(
                {"error": "store unavailable"},
                503,
                headers={"Retry-After": str(self.config.retry_after)},
            )
        result = results[0]
        duplicate = result.deduplicated
        await self._audit(request, "duplicate" if duplicate else "stored", event, None)
        answer = {
            "status": "duplicate" if duplicate else "stored",
            "id": event.id,
            "position": result.last_position,
            "stream": result.stream,
        }
        return Response(
            encode_json(answer), 200 if duplicate else 201, media_type="application/json"
        )

    async def _audit(
        self, request: Request, outcome: str, event: Event, detail: str | None
    ) -> None:
        client = request.client.host if request.client is not None else None
        try:
            await record_audit(
                self.store,
                audit_type("events:publish"),
                principal=principal_of(request),
                client=client,
                outcome=outcome,
                target=event.id,
                detail=detail or f"{event.type} from {event.source}"[:200],
                request=(request.method, request.url.path),
                clock=self.config.clock,
            )
        except Exception as e:  # the event is stored; the log says the audit is missing
            _log.error("audit event not recorded", outcome=outcome, error=type(e).__name__)


def _error(status: int, detail: str) -> Response:
    names = {
        400: "bad request",
        408: "body not received in time",
        413: "payload too large",
        415: "unsupported media type",
    }
    return JSONResponse({"error": names.get(status, "bad request"), "detail": detail}, status)
