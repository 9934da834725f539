"""REST API v1 over the read models: workflows, dead letters, work items, projections.

Every listing reads a read model (never folds streams), is bounded (``limit`` at most
:data:`MAX_LIMIT`) and paginated by an opaque ``cursor`` (``next_cursor`` in the answer; null
on the last page). Operator actions (cancel, redrive, discard, bulk redrive/discard) are
recorded as ``contexten.audit.*`` events naming the token's public id, never the token.

=============================================  =========  =====================================
route                                          action     what
=============================================  =========  =====================================
``GET /api/v1/workflows``                      viewer     instances (status, name, since, until)
``GET /api/v1/workflows/{id}``                 viewer     one instance, its history, its machine
``POST /api/v1/workflows/{id}/cancel``         operator   compensate, then end cancelled
``POST /api/v1/workflows/{id}/redrive``        operator   run a failed instance again
``POST /api/v1/workflows/{id}/migrate``        operator   move a blocked one to a version
``POST /api/v1/workflows/{id}/fork``           operator   a new instance from its input
``GET /api/v1/workflow-versions``              viewer     open instances per workflow version
``GET /api/v1/dead-letters``                   viewer     letters (subscription, status)
``GET /api/v1/dead-letters/counts``            viewer     exact counts by subscription, status
``GET /api/v1/dead-letters/{id}``              viewer     one letter
``POST /api/v1/dead-letters/{id}/redrive``     operator   send it back to its subscription
``POST /api/v1/dead-letters/{id}/discard``     operator   give up on it
``POST /api/v1/dead-letters/redrive``          operator   every parked letter (of a subscription)
``POST /api/v1/dead-letters/discard``          operator   every parked letter (of a subscription)
``GET /api/v1/work-items``                     viewer     search by correlation-id prefix
``GET /api/v1/work-items/{id}``                viewer     a work item and a page of its timeline
``GET /api/v1/schedules``                      viewer     each schedule: paused, last tick, counts
``POST /api/v1/schedules/{id}/pause``          operator   no tick fires until resumed
``POST /api/v1/schedules/{id}/resume``         operator   fire again from the next tick
``POST /api/v1/schedules/{id}/trigger``        operator   one run now (paused or not)
``POST /api/v1/schedules/{id}/backfill``       operator   the runs of every tick in [from, to]
``GET /api/v1/projections``                    viewer     each read model's position and lag
``GET /api/v1/platforms``                      viewer     per platform: traffic, errors, breaker
=============================================  =========  =====================================
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contexten.bus.dead_letters import DeadLetterStatus
from contexten.exceptions import (
    ConfigurationError,
    DeadLetterNotFound,
    MigrationRefused,
    WorkflowError,
    WorkflowNotFound,
    WorkflowNotRegistered,
)
from contexten.ingress.json_api import (
    BadRequest,
    Handler,
    NotFound,
    error_response,
    guard,
    json_response,
    time_param,
)
from contexten.security.audit import audit_type, record_audit
from contexten.security.middleware import principal_of
from contexten.workflows.admin import get_workflow_info, request_cancel, request_redrive
from contexten.workflows.history import WorkflowStatus
from contexten.workflows.schedules import (
    SCHEDULE_PREFIX,
    fold_schedule,
    request_backfill,
    request_pause,
    request_trigger,
)

if TYPE_CHECKING:
    from contexten.app import App

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ReadAPI"]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
_MAX_ID: Final = 300
_BASE: Final = "/api/v1"


def _limit(request: Request, default: int = DEFAULT_LIMIT) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6 or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _position(request: Request, name: str) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise BadRequest(f"{name} must be a log position (a whole number)")
    return int(raw)


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_ID:
        raise BadRequest(f"{name} is too long")
    return value


def _choice(request: Request, name: str, allowed: list[str]) -> str | None:
    value = _text(request, name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


def _path_id(request: Request) -> str:
    value: str = request.path_params["id"]
    if len(value) > _MAX_ID:
        raise NotFound
    return value


_MAX_BODY: Final = 4096
_MAX_VERSION: Final = 100


async def _body(request: Request, fields: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """The request's JSON object body (empty: ``{}``), each key one of ``fields`` with a value
    of its type (no bool for an int, a string of 1 to 100 characters); else 400."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise BadRequest(f"the body is larger than {_MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for key, value in body.items():
        expected = fields.get(key)
        if expected is None:
            raise BadRequest(f"unknown field {key[:40]!r}; expected {', '.join(fields)}")
        if isinstance(value, bool) is not (expected is bool) or not isinstance(value, expected):
            raise BadRequest(f"{key} has the wrong type")
        if isinstance(value, str) and not 1 <= len(value) <= _MAX_VERSION:
            raise BadRequest(f"{key} must be 1 to {_MAX_VERSION} characters")
    return body


_MISSING: Final = (WorkflowNotFound, DeadLetterNotFound)
"""What the read API answers 404 for, besides :class:`NotFound`."""


class ReadAPI:
    """The ``/api/v1`` routes over a running :class:`~contexten.App`'s read models."""

    def __init__(self, app: App) -> None:
        self.app = app

    def routes(self) -> list[tuple[Route, str]]:
        """Each route with the permission action it needs (the one check decides)."""

        def r(path: str, handler: Handler, method: str, action: str) -> tuple[Route, str]:
            return Route(_BASE + path, guard(handler, not_found=_MISSING), methods=[method]), action

        return [
            r("/workflows", self.list_workflows, "GET", "workflows:read"),
            r("/workflows/{id}", self.get_workflow, "GET", "workflows:read"),
            r("/workflows/{id}/cancel", self.cancel_workflow, "POST", "workflows:cancel"),
            r("/workflows/{id}/redrive", self.redrive_workflow, "POST", "workflows:redrive"),
            r("/workflows/{id}/migrate", self.migrate_workflow, "POST", "workflows:migrate"),
            r("/workflows/{id}/fork", self.fork_workflow, "POST", "workflows:fork"),
            r("/workflow-versions", self.workflow_versions, "GET", "workflows:read"),
            r("/dead-letters", self.list_letters, "GET", "dlq:read"),
            r("/dead-letters/counts", self.letter_counts, "GET", "dlq:read"),
            r("/dead-letters/redrive", self.redrive_letters, "POST", "dlq:redrive"),
            r("/dead-letters/discard", self.discard_letters, "POST", "dlq:discard"),
            r("/dead-letters/{id}", self.get_letter, "GET", "dlq:read"),
            r("/dead-letters/{id}/redrive", self.redrive_letter, "POST", "dlq:redrive"),
            r("/dead-letters/{id}/discard", self.discard_letter, "POST", "dlq:discard"),
            r("/work-items", self.search_work_items, "GET", "events:read"),
            r("/work-items/{id}", self.get_work_item, "GET", "events:read"),
            r("/schedules", self.list_schedules, "GET", "schedules:read"),
            r("/schedules/{id}/pause", self.pause_schedule, "POST", "schedules:pause"),
            r("/schedules/{id}/resume", self.resume_schedule, "POST", "schedules:resume"),
            r("/schedules/{id}/trigger", self.trigger_schedule, "POST", "schedules:trigger"),
            r("/schedules/{id}/backfill", self.backfill_schedule, "POST", "schedules:backfill"),
            r("/projections", self.list_projections, "GET", "health:read"),
            r("/platforms", self.list_platforms, "GET", "health:read"),
        ]

    async def _audit(
        self, request: Request, action: str, outcome: str, target: str | None, detail: str = ""
    ) -> None:
        client = request.client.host if request.client is not None else None
        await record_audit(
            self.app.store,
            audit_type(action),
            principal=principal_of(request),
            client=client,
            outcome=outcome,
            target=target,
            detail=detail or None,
            request=(request.method, request.url.path),
        )

    # -- workflows ---------------------------------------------------------------------------

    async def list_workflows(self, request: Request) -> Response:
        """A page of instances, most recently updated first."""
        page = await self.app.read.workflows(
            status=_choice(request, "status", [s.value for s in WorkflowStatus]),
            name=_text(request, "name"),
            since=time_param(request, "since"),
            until=time_param(request, "until"),
            cursor=_text(request, "cursor"),
            limit=_limit(request),
        )
        return json_response({"items": page.items, "next_cursor": page.next_cursor})

    async def get_workflow(self, request: Request) -> Response:
        """One instance: its row, its history (one stream read) and, for a state machine
        this app knows, its states and transitions; with ``as_of``, as it was then (404 if
        it had not started)."""
        info = await get_workflow_info(
            self.app.store, _path_id(request), as_of=time_param(request, "as_of")
        )
        body = info.to_dict(with_history=True)
        machine = self.app.workflows.machines.get(info.name)
        if machine is not None:
            body["machine"] = {
                "initial": machine.initial,
                "states": sorted(machine.states),
                "transitions": [
                    {"from": sorted(t.sources), "on": t.on, "to": t.to} for t in machine.transitions
                ],
            }
        return json_response(body)

    async def cancel_workflow(self, request: Request) -> Response:
        """Ask an instance to cancel (202), or 409 if it has ended."""
        workflow_id = _path_id(request)
        done = await request_cancel(self.app.store, workflow_id, "cancelled through the API")
        await self._audit(request, "workflows:cancel", "done" if done else "unchanged", workflow_id)
        if not done:
            return error_response(409, "conflict", "the instance has ended or is being cancelled")
        return json_response({"status": "cancel requested", "workflow_id": workflow_id}, 202)

    async def redrive_workflow(self, request: Request) -> Response:
        """Ask a failed instance to run again (202), or 409 if it is not failed."""
        workflow_id = _path_id(request)
        done = await request_redrive(self.app.store, workflow_id)
        await self._audit(
            request, "workflows:redrive", "done" if done else "unchanged", workflow_id
        )
        if not done:
            return error_response(409, "conflict", "the instance is not failed")
        return json_response({"status": "redrive requested", "workflow_id": workflow_id}, 202)

    # -- migrating and forking instances -------------------------------------------------------

    async def migrate_workflow(self, request: Request) -> Response:
        """Move a blocked instance to registered version ``to_version`` from its last
        compatible point (200, the plan carried out: point, superseded calls, effects already
        made); ``dry_run`` answers the plan and records nothing; 409 with the reason when the
        move is refused (effects would be superseded unforced, a compensation, not blocked):
        nothing is recorded then; 400 for a bad body or an unregistered version."""
        workflow_id = _path_id(request)
        body = await _body(request, {"to_version": (int, str), "force": bool, "dry_run": bool})
        if "to_version" not in body:
            raise BadRequest("to_version is required")
        to_version: int | str = body["to_version"]
        force, dry_run = bool(body.get("force", False)), bool(body.get("dry_run", False))
        try:
            if dry_run:
                plan = await self.app.plan_migration(workflow_id, to_version)
            else:
                plan = await self.app.migrate(workflow_id, to_version, force=force)
        except WorkflowNotRegistered as e:
            raise BadRequest(str(e)) from None
        except MigrationRefused as e:
            await self._audit(request, "workflows:migrate", "refused", workflow_id, str(e))
            refused = {"effects": e.effects, "point": e.point, "forceable": e.forceable}
            return json_response({"error": "conflict", "detail": str(e), **refused}, 409)
        except WorkflowNotFound:
            raise
        except WorkflowError as e:  # not blocked, a state machine, moved meanwhile, diverges
            if not dry_run:
                await self._audit(request, "workflows:migrate", "unchanged", workflow_id, str(e))
            return error_response(409, "conflict", str(e))
        if not dry_run:
            detail = f"version {plan.from_version or '?'} -> {plan.to_version}, point {plan.point}"
            if plan.effects:
                detail += f", forced over {len(plan.effects)} effect(s)"
            await self._audit(request, "workflows:migrate", "done", workflow_id, detail)
        return json_response({**plan.to_dict(), "migrated": not dry_run, "dry_run": dry_run})

    async def fork_workflow(self, request: Request) -> Response:
        """Start a new instance from an instance's input on the newest version, linked both
        ways (201, naming it); ``cancel_old`` also cancels the old one with its
        compensations (default: left as it is); 409 for a state machine or a workflow this
        app does not register."""
        workflow_id = _path_id(request)
        cancel_old = bool((await _body(request, {"cancel_old": bool})).get("cancel_old", False))
        try:
            handle = await self.app.fork_workflow(workflow_id, cancel_old=cancel_old)
        except WorkflowNotFound:
            raise
        except WorkflowError as e:
            await self._audit(request, "workflows:fork", "unchanged", workflow_id, str(e))
            return error_response(409, "conflict", str(e))
        forked = handle.workflow_id
        detail = f"forked as {forked}" + (", the old one cancelled" if cancel_old else "")
        await self._audit(request, "workflows:fork", "done", workflow_id, detail)
        body = {"status": "forked", "workflow_id": workflow_id, "forked_as": forked}
        return json_response({**body, "cancel_old": cancel_old}, 201)

    async def workflow_versions(self, request: Request) -> Response:
        """Per (workflow, version): its open instances and how many are blocked (the read
        model); an old version may be deleted once no instance of it is in flight."""
        return json_response({"items": await self.app.read.workflow_versions()})

    # -- dead letters ------------------------------------------------------------------------

    async def list_letters(self, request: Request) -> Response:
        """A page of letters, oldest first (``status=all`` for every status)."""
        statuses = [s.value for s in DeadLetterStatus] + ["all"]
        status = _choice(request, "status", statuses) or DeadLetterStatus.PARKED.value
        page = await self.app.read.dead_letters(
            subscription=_text(request, "subscription"),
            status=None if status == "all" else status,
            cursor=_text(request, "cursor"),
            limit=_limit(request),
        )
        return json_response(
            {"items": [x.to_dict() for x in page.items], "next_cursor": page.next_cursor}
        )

    async def letter_counts(self, request: Request) -> Response:
        """Exact counts by subscription and status, and the open (parked) total."""
        counts = await self.app.read.dead_letter_counts()
        parked = sum(c.get(DeadLetterStatus.PARKED.value, 0) for c in counts.values())
        return json_response({"open": parked, "by_subscription": counts})

    async def get_letter(self, request: Request) -> Response:
        """One letter (from its stream: exact even before the read model caught up)."""
        return json_response((await self.app.dead_letters.get(_path_id(request))).to_dict())

    async def _decide_one(self, request: Request, action: str) -> Response:
        letter_id = _path_id(request)
        queue = self.app.dead_letters
        done = await (queue.redrive if action == "dlq:redrive" else queue.discard)(letter_id)
        await self._audit(request, action, "done" if done else "unchanged", letter_id)
        if not done:
            return error_response(409, "conflict", "the letter is not parked")
        status = "redriven" if action == "dlq:redrive" else "discarded"
        return json_response({"status": status, "id": letter_id})

    async def redrive_letter(self, request: Request) -> Response:
        """Send a parked letter's event back to its subscription, once."""
        return await self._decide_one(request, "dlq:redrive")

    async def discard_letter(self, request: Request) -> Response:
        """Give up on a parked letter."""
        return await self._decide_one(request, "dlq:discard")

    async def _decide_all(self, request: Request, action: str) -> Response:
        subscription = _text(request, "subscription")
        letters = await self.app.read.all_dead_letters(subscription)
        queue = self.app.dead_letters
        decide = queue.redrive if action == "dlq:redrive" else queue.discard
        done = 0
        for letter in letters:
            if await decide(letter.id):
                done += 1
        await self._audit(
            request, action, "done", subscription or "*", f"{done} of {len(letters)} letters"
        )
        return json_response({"matched": len(letters), "done": done})

    async def redrive_letters(self, request: Request) -> Response:
        """Redrive every parked letter (of ``subscription``)."""
        return await self._decide_all(request, "dlq:redrive")

    async def discard_letters(self, request: Request) -> Response:
        """Discard every parked letter (of ``subscription``)."""
        return await self._decide_all(request, "dlq:discard")

    # -- schedules ---------------------------------------------------------------------------

    async def list_schedules(self, request: Request) -> Response:
        """Every schedule that has run on the store (name order, at most ``limit``): paused
        or not, its last tick and run, and how many ticks ran, were skipped or missed."""
        limit = _limit(request)
        found = await self.app.store.list_streams(SCHEDULE_PREFIX, limit=limit + 1)
        items = []
        for info in found[:limit]:
            state = fold_schedule(await self.app.store.read_stream(info.stream))
            items.append(
                {
                    "name": info.stream.removeprefix(SCHEDULE_PREFIX),
                    "paused": state.paused,
                    "last_tick": state.last_tick,
                    "last_run": state.last_run,
                    "ticked": state.ticked,
                    "skipped": state.skipped,
                    "missed": state.missed,
                    "pending_triggers": len(state.triggers),
                    "pending_backfills": len(state.backfills),
                }
            )
        return json_response({"items": items, "truncated": len(found) > limit})

    async def _schedule_name(self, request: Request) -> str:
        """The path's schedule name; 404 unless that schedule has run on this store."""
        name = _path_id(request)
        if not await self.app.store.read_stream(SCHEDULE_PREFIX + name):
            raise NotFound
        return name

    async def _set_paused(self, request: Request, *, paused: bool) -> Response:
        name = await self._schedule_name(request)
        action = "schedules:pause" if paused else "schedules:resume"
        await request_pause(self.app.store, name, paused=paused, at=datetime.now(UTC))
        await self._audit(request, action, "requested", name)
        status = "pause requested" if paused else "resume requested"
        return json_response({"status": status, "schedule": name}, 202)

    async def pause_schedule(self, request: Request) -> Response:
        """Stop a schedule firing (202): ticks while paused never run."""
        return await self._set_paused(request, paused=True)

    async def resume_schedule(self, request: Request) -> Response:
        """Let a paused schedule fire again from its next tick (202)."""
        return await self._set_paused(request, paused=False)

    async def trigger_schedule(self, request: Request) -> Response:
        """Ask for one run now (202); the answer names the run the next poll starts."""
        name = await self._schedule_name(request)
        request_id = await request_trigger(self.app.store, name)
        await self._audit(request, "schedules:trigger", "requested", name, request_id)
        run = f"sched:{name}:manual:{request_id}"
        return json_response({"status": "trigger requested", "schedule": name, "run": run}, 202)

    async def backfill_schedule(self, request: Request) -> Response:
        """Ask for the runs of every tick in [``from``, ``to``] (default: now) that has none
        (202; at most 1,000 ticks); 400 when ``from`` is missing or after ``to``."""
        start = time_param(request, "from")
        if start is None:
            raise BadRequest("from is required (ISO 8601 with a UTC offset)")
        end = time_param(request, "to") or datetime.now(UTC)
        name = await self._schedule_name(request)
        try:
            request_id = await request_backfill(self.app.store, name, start, end)
        except ConfigurationError as e:
            raise BadRequest(str(e)) from None
        span = f"{start.isoformat()} .. {end.isoformat()}"
        await self._audit(request, "schedules:backfill", "requested", name, span)
        body = {"status": "backfill requested", "schedule": name, "request_id": request_id}
        return json_response({**body, "from": start, "to": end}, 202)

    # -- work items, projections, platforms ----------------------------------------------------

    async def search_work_items(self, request: Request) -> Response:
        """Work items whose correlation id starts with ``prefix``."""
        prefix = _text(request, "prefix") or ""
        items = await self.app.read.search_work_items(prefix, limit=_limit(request))
        return json_response({"items": items})

    async def get_work_item(self, request: Request) -> Response:
        """A work item's summary and one page of its timeline (``after``: a position); with
        ``as_of``, only what had been recorded by then (404 if nothing had; the summary is
        today's)."""
        correlation_id = _path_id(request)
        as_of = time_param(request, "as_of")
        item = await self.app.read.work_item(correlation_id)
        if item is None:
            raise NotFound
        page = await self.app.read.timeline(
            correlation_id, after=_position(request, "after"), limit=_limit(request), as_of=as_of
        )
        if as_of is not None and not page.items and not _position(request, "after"):
            raise NotFound
        return json_response(
            {"work_item": item, "timeline": page.items, "next_after": page.next_cursor}
        )

    async def list_projections(self, request: Request) -> Response:
        """Each read model's position, lag, version and state."""
        return json_response({"items": [s.to_dict() for s in await self.app.projections.status()]})

    async def list_platforms(self, request: Request) -> Response:
        """Per platform: webhooks, actions and recent errors from the log, merged with the
        running agents' breaker state and availability."""
        rows = {r["platform"]: r for r in await self.app.read.platforms()}
        agents = (await self.app.health()).agents
        for name, live in agents.items():
            rows.setdefault(name, {"platform": name})["live"] = dict(live)
        return json_response({"items": [rows[k] for k in sorted(rows)]})
