"""The dashboard's pages and actions: one handler per page, each naming the action it needs.

Every handler is wrapped by :meth:`Pages.page` or :meth:`Pages.action`, which ask who the
visitor is and the one permission check (``allowed(principal, action)``) before the handler
runs: an anonymous visitor is sent to the login page (401 for anything but a page), a
visitor whose role does not allow the action gets 403, and an action additionally needs
the form's CSRF token and is recorded as an audit event with its outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse

from contexten.dashboard.access import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Gate,
    Visitor,
    csrf_valid,
)
from contexten.dashboard.data import DashboardData, EventFilter
from contexten.dashboard.diagram import state_machine_svg
from contexten.dashboard.forms import (
    MAX_PARAM,
    BadRequest,
    field,
    int_param,
    param,
    read_form,
    safe_next,
)
from contexten.dashboard.live import event_stream
from contexten.dashboard.render import SECURITY_HEADERS, Renderer, history_rows
from contexten.exceptions import (
    InvalidPattern,
    MigrationRefused,
    StoreError,
    WorkflowError,
    WorkflowNotFound,
    WorkflowNotRegistered,
)
from contexten.observability.logging import get_logger
from contexten.security import AUTH_DENIED
from contexten.workflows.history import WorkflowStatus

__all__ = ["Pages"]

Handler = Callable[[Request, Visitor], Awaitable[Response]]

_log = get_logger("contexten.dashboard")
_PAGE_SIZE: Final = 25
_EVENTS_PAGE: Final = 50
_MAX_SELECTED: Final = 1_000


class Pages:
    """The handlers, bound to the data, the renderer and the gate.

    Args:
        data: where pages read from.
        gate: who the visitor is, and the audit.
        renderer: the templates.
        stream_seconds: how long one live-stream connection lasts before the browser
            reconnects (with ``Last-Event-ID``, so it misses nothing).
    """

    def __init__(
        self, data: DashboardData, gate: Gate, renderer: Renderer, *, stream_seconds: float = 15.0
    ) -> None:
        self.data = data
        self.gate = gate
        self.renderer = renderer
        self.stream_seconds = stream_seconds

    # -- the wrappers: authentication, the permission check, CSRF, audit -----------------

    def page(self, action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page (GET) that needs ``action``."""

        async def endpoint(request: Request) -> Response:
            token = request.query_params.get("token")
            if token:  # a login URL (``contexten serve`` prints one): log in, drop the token
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                return await self._log_in(request, token, target)
            visitor = await self._visitor(request)
            if isinstance(visitor, Response):
                return visitor
            if visitor.principal is None:
                if request.headers.get("accept", "").startswith("text/event-stream"):
                    return self._status(401, "log in first")
                path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(path)}", 303, SECURITY_HEADERS)
            return await self._allowed_run(request, visitor, action, handler)

        endpoint.__name__ = handler.__name__
        return endpoint

    def action(self, action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing POST that needs ``action`` and the form's CSRF token."""

        async def endpoint(request: Request) -> Response:
            visitor = await self._visitor(request)
            if isinstance(visitor, Response):
                return visitor
            if visitor.principal is None:
                return self._status(401, "log in first")
            try:
                form = await read_form(request, _MAX_SELECTED + 20)
            except BadRequest as e:
                return self._error(visitor, 400, str(e))
            request.state.form = form
            if visitor.by_cookie and not csrf_valid(visitor.token or "", field(form, CSRF_FIELD)):
                await self.gate.audit(
                    request, AUTH_DENIED, visitor.principal, "403",
                    detail="missing or wrong CSRF token",
                )  # fmt: skip
                return self._error(visitor, 403, "This form has expired; reload the page.")
            return await self._allowed_run(request, visitor, action, handler)

        endpoint.__name__ = handler.__name__
        return endpoint

    async def _allowed_run(
        self, request: Request, visitor: Visitor, action: str, handler: Handler
    ) -> Response:
        """Run ``handler`` if ``visitor`` may perform ``action`` (else 403, audited), turning
        its bad requests into 400 and store failures into 503."""
        if not visitor.can(action):
            await self.gate.denied(request, visitor, action)
            return self._error(visitor, 403, f"Your role cannot do this ({action}).")
        try:
            return await handler(request, visitor)
        except BadRequest as e:
            return self._error(visitor, 400, str(e))
        except StoreError as e:
            _log.error("dashboard: store failed", error=type(e).__name__)
            return self._error(visitor, 503, "The event store is unavailable; try again.")

    async def _visitor(self, request: Request) -> Visitor | Response:
        try:
            return await self.gate.visitor(request)
        except StoreError as e:
            _log.error("dashboard: cannot check the session", error=type(e).__name__)
            return self._status(503, "credentials cannot be checked now")

    def _status(self, status: int, text: str) -> Response:
        return PlainTextResponse(text, status, headers=dict(SECURITY_HEADERS))

    def _error(self, visitor: Visitor, status: int, message: str) -> Response:
        return self.renderer.html(
            "error.html", {"visitor": visitor, "status": status, "message": message}, status
        )

    def _render(self, template: str, visitor: Visitor, **context: Any) -> Response:
        return self.renderer.html(template, {"visitor": visitor, **context})

    # -- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """The login page; with ``?token=`` it logs in directly (the printed login URL)."""
        token = request.query_params.get("token")
        if token:
            return await self._log_in(request, token, request.query_params.get("next"))
        visitor = Visitor(None)
        return self.renderer.html(
            "login.html",
            {"visitor": visitor, "next": safe_next(request.query_params.get("next")),
             "error": None},
        )  # fmt: skip

    async def login(self, request: Request) -> Response:
        """Check the token typed into the form; set the session cookie."""
        try:
            form = await read_form(request, 5)
        except BadRequest as e:
            return self._login_failed(str(e), 400)
        return await self._log_in(request, field(form, "token") or "", field(form, "next"))

    async def _log_in(self, request: Request, token: str, next_url: str | None) -> Response:
        wait = self.gate.retry_after(request)
        if wait is not None:
            response = self._login_failed("Too many failed attempts; wait and try again.", 429)
            response.headers["retry-after"] = str(wait)
            return response
        try:
            principal = await self.gate.login(request, token.strip())
        except StoreError:
            return self._status(503, "credentials cannot be checked now")
        if principal is None:
            return self._login_failed("That token is not valid (or was revoked).", 401)
        response = RedirectResponse(safe_next(next_url), 303, SECURITY_HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            token.strip(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    def _login_failed(self, message: str, status: int) -> Response:
        return self.renderer.html(
            "login.html", {"visitor": Visitor(None), "next": "/", "error": message}, status
        )

    async def logout(self, request: Request) -> Response:
        """Forget the session cookie (a POST with the CSRF token, like every change)."""
        visitor = await self._visitor(request)
        if isinstance(visitor, Response):
            return visitor
        try:
            form = await read_form(request, 5)
        except BadRequest as e:
            return self._status(400, str(e))
        if visitor.by_cookie and not csrf_valid(visitor.token or "", field(form, CSRF_FIELD)):
            return self._status(403, "missing or wrong CSRF token")
        response = RedirectResponse("/login", 303, SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- overview ------------------------------------------------------------------------

    async def overview(self, request: Request, visitor: Visitor) -> Response:
        """Health of every part, dead letters, workflows by status, events per minute, the
        workers and their partitions, and each platform's traffic, breaker and rate limit."""
        health = await self.data.health()
        activity = await self.data.per_minute()
        per_minute, errors = activity.events, activity.errors
        return self._render(
            "overview.html",
            visitor,
            health=health,
            workflows=await self.data.workflow_counts(),
            letters=await self.data.dead_letter_counts(),
            workers=await self.data.workers(),
            platforms=await self.data.platforms(health),  # its report, not a second one
            per_minute=per_minute,
            peak=max(per_minute) or 1,
            errors=errors,
            error_peak=max(errors) or 1,
            sources=activity.sources[:6],
        )

    # -- events --------------------------------------------------------------------------

    def _event_filter(self, request: Request, visitor: Visitor) -> EventFilter:
        since_minutes = int_param(request, "since_minutes", None)
        since = None
        if since_minutes is not None:
            since = datetime.now(UTC) - timedelta(minutes=min(since_minutes, 10**7))
        return EventFilter(
            type=param(request, "type"),
            source=param(request, "source"),
            correlation_id=param(request, "correlation_id"),
            subject=param(request, "subject"),
            since=since,
            hidden=visitor.hidden_streams,
        )

    def _filter_params(self, request: Request) -> dict[str, str]:
        names = ("type", "source", "correlation_id", "subject", "since_minutes")
        return {n: request.query_params[n] for n in names if request.query_params.get(n)}

    async def events(self, request: Request, visitor: Visitor) -> Response:
        """The newest events, filtered, with a live stream of new ones on top."""
        filters = self._event_filter(request, visitor)
        before = int_param(request, "before", None)
        try:
            page = await self.data.events(filters, before=before, limit=_EVENTS_PAGE)
        except InvalidPattern as e:
            raise BadRequest(f"type: {e}") from None
        return self._render(
            "events.html",
            visitor,
            page=page,
            params=self._filter_params(request),
            live=before is None,
        )

    async def event(self, request: Request, visitor: Visitor) -> Response:
        """One event: its envelope, its payload (secrets redacted), its causes and effects."""
        event_id = request.path_params["event_id"]
        rec = await self.data.event(event_id) if len(event_id) <= MAX_PARAM else None
        hidden = visitor.hidden_streams
        if rec is None or (hidden and rec.stream.startswith(hidden)):
            return self._error(visitor, 404, "No such event.")
        cause = await self.data.event(rec.event.causation_id) if rec.event.causation_id else None
        if cause is not None and hidden and cause.stream.startswith(hidden):
            cause = None
        return self._render(
            "event.html",
            visitor,
            rec=rec,
            cause=cause,
            caused=await self.data.caused_by(rec, hidden=hidden),
        )

    async def stream(self, request: Request, visitor: Visitor) -> Response:
        """Server-sent events: each new matching event as a table row, ``id`` = position."""
        filters = self._event_filter(request, visitor)
        try:
            filters.predicate()
        except InvalidPattern as e:
            raise BadRequest(f"type: {e}") from None
        last_id = request.headers.get("last-event-id") or request.query_params.get("after")
        if last_id is not None and last_id.isascii() and last_id.isdigit() and len(last_id) < 19:
            after = int(last_id)
        else:
            after = await self.data.head()
        return StreamingResponse(
            event_stream(request, self.data, self.renderer, filters, after, self.stream_seconds),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "x-accel-buffering": "no"},
        )

    # -- workflows -----------------------------------------------------------------------

    async def workflows(self, request: Request, visitor: Visitor) -> Response:
        """Instances with filters (status, name), search by id or key, paginated."""
        status = param(request, "status")
        if status is not None and status not in {str(s) for s in WorkflowStatus}:
            raise BadRequest(f"unknown status {status!r}")
        try:
            page = await self.data.workflows(
                status=status,
                name=param(request, "name"),
                search=param(request, "q"),
                page=int_param(request, "page", 1) or 1,
                cursor=param(request, "cursor"),
                size=_PAGE_SIZE,
            )
        except ValueError as e:  # a cursor this dashboard did not make
            raise BadRequest(str(e)) from None
        params = {
            k: request.query_params[k]
            for k in ("status", "name", "q")
            if request.query_params.get(k)
        }
        return self._render(
            "workflows.html",
            visitor,
            page=page,
            params=params,
            statuses=[str(s) for s in WorkflowStatus],
            cursor=param(request, "cursor"),
            names=self.data.workflow_names(),
        )

    async def workflow(self, request: Request, visitor: Visitor) -> Response:
        """One instance: status, input, result, history timeline, diagram, actions."""
        workflow_id = request.path_params["workflow_id"]
        info = await self.data.workflow(workflow_id) if len(workflow_id) <= MAX_PARAM else None
        if info is None:
            return self._error(visitor, 404, "No such workflow instance.")
        machine = self.data.machine(info.name) if info.kind == "state_machine" else None
        return self._render(
            "workflow.html",
            visitor,
            info=info,
            input=await self.data.workflow_input(workflow_id),
            timeline=history_rows(info.history),
            # Markup: the diagram escapes every label itself (contexten.dashboard.diagram).
            diagram=Markup(state_machine_svg(machine, info.state)) if machine else None,
            mermaid=machine.to_mermaid(info.state) if machine is not None else None,
            audit=await self.data.audit_for(workflow_id) if visitor.can("audit:read") else [],
            done=request.query_params.get("done"),
            versions=self.data.workflow_versions(info.name) if info.kind == "function" else [],
        )

    async def workflow_action(self, request: Request, visitor: Visitor) -> Response:
        """Cancel or redrive one instance (operator)."""
        workflow_id = request.path_params["workflow_id"]
        verb = request.url.path.rsplit("/", 1)[-1]
        if verb == "cancel":
            changed = await self.data.cancel_workflow(workflow_id, "cancelled from the dashboard")
        else:
            changed = await self.data.redrive_workflow(workflow_id)
        action = f"workflows:{verb}"
        await self.gate.acted(request, visitor, action, workflow_id, "done" if changed else
                              "unchanged")  # fmt: skip
        done = f"{verb}-requested" if changed else f"{verb}-unchanged"
        return RedirectResponse(
            f"/workflows/{quote(workflow_id, safe=':')}?done={done}", 303, SECURITY_HEADERS
        )

    async def migrate_action(self, request: Request, visitor: Visitor) -> Response:
        """Move a blocked instance to another registered version (operator).

        The first POST previews the plan (a dry run: records nothing): the last compatible
        point, the calls it supersedes and the effects those already made, and asks to
        confirm (ticking *force* when there are effects); the confirming POST
        (``confirm=yes``) migrates, is audited, and goes back to the instance. A refusal
        (effects, unforced; a compensation) is 409 with its reason and records nothing.
        """
        form: FormData = request.state.form
        workflow_id = request.path_params["workflow_id"]
        to_version = (field(form, "to_version") or "").strip()
        if not 1 <= len(to_version) <= MAX_PARAM:
            raise BadRequest("choose the version to migrate to")
        force, confirmed = field(form, "force") == "yes", field(form, "confirm") == "yes"
        back = f"/workflows/{quote(workflow_id, safe=':')}"
        try:
            if not confirmed:
                plan = await self.data.plan_migration(workflow_id, to_version)
                return self._render("migrate.html", visitor, plan=plan, force=force, back=back)
            plan = await self.data.migrate(workflow_id, to_version, force=force)
        except WorkflowNotFound:
            return self._error(visitor, 404, "No such workflow instance.")
        except WorkflowNotRegistered as e:
            raise BadRequest(str(e)) from None
        except MigrationRefused as e:
            await self.gate.acted(
                request, visitor, "workflows:migrate", workflow_id, "refused", str(e)
            )
            return self._error(visitor, 409, str(e))
        except WorkflowError as e:  # not blocked, a state machine, moved meanwhile, diverges
            if confirmed:
                await self.gate.acted(
                    request, visitor, "workflows:migrate", workflow_id, "unchanged", str(e)
                )
            return self._error(visitor, 409, str(e))
        detail = f"version {plan.from_version or '?'} -> {plan.to_version}, point {plan.point}"
        if plan.effects:
            detail += f", forced over {len(plan.effects)} effect(s)"
        await self.gate.acted(request, visitor, "workflows:migrate", workflow_id, "done", detail)
        return RedirectResponse(f"{back}?done=migrated", 303, SECURITY_HEADERS)

    async def fork_action(self, request: Request, visitor: Visitor) -> Response:
        """Start a new instance from an instance's input on the newest version, linked to it
        (operator; ``cancel_old=yes`` also cancels the old one), and show the new one."""
        form: FormData = request.state.form
        workflow_id = request.path_params["workflow_id"]
        cancel_old = field(form, "cancel_old") == "yes"
        try:
            forked = await self.data.fork_workflow(workflow_id, cancel_old=cancel_old)
        except WorkflowNotFound:
            return self._error(visitor, 404, "No such workflow instance.")
        except WorkflowError as e:
            await self.gate.acted(
                request, visitor, "workflows:fork", workflow_id, "unchanged", str(e)
            )
            return self._error(visitor, 409, str(e))
        detail = f"forked as {forked}" + (", the old one cancelled" if cancel_old else "")
        await self.gate.acted(request, visitor, "workflows:fork", workflow_id, "done", detail)
        return RedirectResponse(
            f"/workflows/{quote(forked, safe=':~')}?done=forked", 303, SECURITY_HEADERS
        )

    # -- versions ------------------------------------------------------------------------

    async def versions(self, request: Request, visitor: Visitor) -> Response:
        """Workflow versions with their in-flight and blocked instances (whether an old
        version's code may be deleted), and the blocked instances with their reasons (all,
        or one workflow's, or one version's)."""
        name, version = param(request, "name"), param(request, "version")
        if version is not None and name is None:
            raise BadRequest("a version needs its workflow's name")
        blocked, more = await self.data.blocked(name=name, version=version)
        return self._render(
            "versions.html",
            visitor,
            versions=await self.data.versions(),
            blocked=blocked,
            more=more,
            name=name,
            version=version,
        )

    # -- schedules ---------------------------------------------------------------------

    async def schedules(self, request: Request, visitor: Visitor) -> Response:
        """Durable schedules: paused or not, last tick and run, counts (read only here; the
        CLI pauses, resumes, triggers and backfills)."""
        return self._render("schedules.html", visitor, schedules=await self.data.schedules())

    # -- work items ----------------------------------------------------------------------

    async def work_items(self, request: Request, visitor: Visitor) -> Response:
        """Search a work item by its id (``ENG-123``)."""
        key = param(request, "q")
        if key:
            return RedirectResponse(f"/work-items/{quote(key, safe='')}", 303, SECURITY_HEADERS)
        return self._render("work_items.html", visitor)

    async def work_item(self, request: Request, visitor: Visitor) -> Response:
        """The cross-platform timeline of one correlation id."""
        key = request.path_params["key"]
        if len(key) > MAX_PARAM:
            raise BadRequest("that id is too long")
        after = int_param(request, "after", 0, low=0) or 0
        item = await self.data.work_item(key, after=after, audit=visitor.can("audit:read"))
        return self._render("work_item.html", visitor, item=item)

    # -- dead letters --------------------------------------------------------------------

    def _letter_params(self, source: Any) -> dict[str, str]:
        out = {}
        for name in ("status", "subscription", "error_type"):
            value = str(source.get(name) or "").strip()
            if len(value) > MAX_PARAM:
                raise BadRequest(f"{name} is too long")
            if value:
                out[name] = value
        status = out.get("status", "parked")
        if status != "all" and status not in ("parked", "redriven", "discarded", "resolved"):
            raise BadRequest(f"unknown status {status!r}")
        out["status"] = status
        return out

    async def _matching_letters(self, params: dict[str, str]) -> list[Any]:
        status = params["status"]
        return await self.data.all_letters(
            status=None if status == "all" else status,
            subscription=params.get("subscription"),
            error_type=params.get("error_type"),
        )

    async def letters(self, request: Request, visitor: Visitor) -> Response:
        """Dead letters with their error types and counts; select, redrive, discard."""
        params = self._letter_params(request.query_params)
        status = params["status"]
        try:
            page = await self.data.letters(
                status=None if status == "all" else status,
                subscription=params.get("subscription"),
                error_type=params.get("error_type"),
                cursor=param(request, "cursor"),
            )
        except ValueError as e:  # a cursor this dashboard did not make
            raise BadRequest(str(e)) from None
        by_error: dict[str, int] = {}
        for letter in page.items:
            by_error[letter.error_type] = by_error.get(letter.error_type, 0) + 1
        return self._render(
            "letters.html",
            visitor,
            letters=page.items,
            total=page.total,
            next_cursor=page.next_cursor,
            by_error=sorted(by_error.items(), key=lambda kv: -kv[1]),
            params=params,
            done=request.query_params.get("done"),
        )

    async def letter(self, request: Request, visitor: Visitor) -> Response:
        """One dead letter: its error, its event, what happened to it."""
        letter = await self.data.letter(request.path_params["letter_id"])
        if letter is None:
            return self._error(visitor, 404, "No such dead letter.")
        return self._render(
            "letter.html",
            visitor,
            letter=letter,
            rec=await self.data.event(letter.event_id),
            history=await self.data.letter_history(letter),
            audit=await self.data.audit_for(letter.id) if visitor.can("audit:read") else [],
            done=request.query_params.get("done"),
        )

    async def letters_action(self, request: Request, visitor: Visitor) -> Response:
        """Redrive or discard letters: one, the selected ones, or all matching a filter.

        The first POST shows what would be affected and asks to confirm; the confirming POST
        (``confirm=yes``) acts, records one audit event per letter, and goes back.
        """
        form: FormData = request.state.form
        verb = request.url.path.rsplit("/", 1)[-1]
        params = self._letter_params(form)
        if field(form, "scope") == "matching":
            ids = [x.id for x in await self._matching_letters(params) if str(x.status) == "parked"]
        else:
            ids = [str(v)[:MAX_PARAM] for v in form.getlist("id")][:_MAX_SELECTED]
        if not ids:
            raise BadRequest("select at least one parked letter")
        if field(form, "confirm") != "yes":
            return self._render(
                "confirm.html",
                visitor,
                verb=verb,
                ids=ids,
                scope=field(form, "scope") or "selected",
                params=params,
                back=safe_next(field(form, "back") or "/dead-letters"),
            )
        act = self.data.redrive_letters if verb == "redrive" else self.data.discard_letters
        results = await act(ids)
        for letter_id, changed in results.items():
            await self.gate.acted(
                request, visitor, f"dlq:{verb}", letter_id, "done" if changed else "unchanged"
            )
        changed_count = sum(results.values())
        back = safe_next(field(form, "back") or "/dead-letters")
        sep = "&" if "?" in back else "?"
        return RedirectResponse(
            f"{back}{sep}done={verb}:{changed_count}/{len(ids)}", 303, SECURITY_HEADERS
        )
