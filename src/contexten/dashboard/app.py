"""The dashboard's routes, ready to be served by ``contexten serve`` and ``contexten demo``.

::

    routes = dashboard_routes(app)                  # [(route, rule), ...]
    server = IngressServer(app, extra_routes=routes)

Every page is at ``/`` and below; the API, webhooks and health routes keep their paths.
The routes are public to the API's security middleware (which still checks the ``Host``):
the dashboard asks the same token registry and the same permission check itself, because a
browser sends a session cookie rather than an ``Authorization`` header (see
:mod:`contexten.dashboard.access`).

=====================================  ==============================  ===================
path                                   what                            needs
=====================================  ==============================  ===================
``GET /``                              overview                        ``health:read``
``GET|POST /login``, ``POST /logout``  the session                     a token
``GET /events``, ``/events/{id}``      events, one event               ``events:read``
``GET /events/stream``                 live events (SSE)               ``events:read``
``GET /workflows``, ``/workflows/id``  instances, one instance         ``workflows:read``
``POST /workflows/id/cancel|redrive``  steer one instance              ``workflows:cancel``..
``POST /workflows/id/migrate|fork``    move a blocked one, start anew  ``workflows:migrate``..
``GET /schedules``                     durable schedules               ``workflows:read``
``GET /versions``                      versions in flight, blocked     ``workflows:read``
``GET /work-items``, ``/work-items/k`` a work item's timeline          ``events:read``
``GET /dead-letters``, ``/…/{id}``     dead letters, one letter        ``dlq:read``
``POST /dead-letters/redrive|discard`` one, selected, all matching     ``dlq:redrive``..
``GET /static/...``                    CSS, vendored htmx              nothing
=====================================  ==============================  ===================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from contexten.dashboard.access import Authenticator, Gate
from contexten.dashboard.data import DashboardData, DashboardHost
from contexten.dashboard.pages import Pages
from contexten.dashboard.render import Renderer
from contexten.security import FailureThrottle, RouteAction
from contexten.workflows.state_machine import StateMachine

__all__ = ["STATIC_DIR", "dashboard_routes"]

STATIC_DIR: Final = Path(__file__).parent / "static"
_LOGIN_FAILURES: Final = 10
"""Failed logins one client may make a minute before it is answered 429."""


def _registry(request: Request) -> Authenticator:
    tokens: Authenticator = request.app.state.tokens
    return tokens


def dashboard_routes(
    host: DashboardHost,
    *,
    machines: Mapping[str, StateMachine] | None = None,
    stream_seconds: float = 15.0,
    throttle: FailureThrottle | None = None,
) -> list[tuple[BaseRoute, RouteAction]]:
    """The dashboard's routes over ``host`` (an :class:`~contexten.App`), each with the rule
    the security middleware applies (None: the dashboard checks for itself).

    Args:
        host: the application shown.
        machines: its state machines by name (default: the App's, when it has them).
        stream_seconds: how long one live-stream connection lasts (the browser reconnects
            with ``Last-Event-ID`` and misses nothing); it also bounds how long an open page
            delays a graceful shutdown.
        throttle: counts failed logins per client (default: 10 a minute).
    """
    engine: Any = getattr(host, "workflows", None)
    if machines is None:
        machines = dict(getattr(engine, "machines", None) or {})
    data = DashboardData(host, machines, list(getattr(engine, "definitions", None) or ()))
    gate = Gate(lambda: host.store, _registry, throttle or FailureThrottle(_LOGIN_FAILURES, 60.0))
    pages = Pages(data, gate, Renderer(), stream_seconds=stream_seconds)
    p, a = pages.page, pages.action
    routes: list[BaseRoute] = [
        Route("/", p("health:read", pages.overview), methods=["GET"]),
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/events", p("events:read", pages.events), methods=["GET"]),
        Route("/events/stream", p("events:read", pages.stream), methods=["GET"]),
        Route("/events/{event_id}", p("events:read", pages.event), methods=["GET"]),
        Route("/workflows", p("workflows:read", pages.workflows), methods=["GET"]),
        Route(
            "/workflows/{workflow_id:path}/cancel",
            a("workflows:cancel", pages.workflow_action),
            methods=["POST"],
        ),
        Route(
            "/workflows/{workflow_id:path}/redrive",
            a("workflows:redrive", pages.workflow_action),
            methods=["POST"],
        ),
        Route(
            "/workflows/{workflow_id:path}/migrate",
            a("workflows:migrate", pages.migrate_action),
            methods=["POST"],
        ),
        Route(
            "/workflows/{workflow_id:path}/fork",
            a("workflows:fork", pages.fork_action),
            methods=["POST"],
        ),
        Route(
            "/workflows/{workflow_id:path}", p("workflows:read", pages.workflow), methods=["GET"]
        ),
        Route("/schedules", p("workflows:read", pages.schedules), methods=["GET"]),
        Route("/versions", p("workflows:read", pages.versions), methods=["GET"]),
        Route("/work-items", p("events:read", pages.work_items), methods=["GET"]),
        Route("/work-items/{key:path}", p("events:read", pages.work_item), methods=["GET"]),
        Route("/dead-letters", p("dlq:read", pages.letters), methods=["GET"]),
        Route("/dead-letters/redrive", a("dlq:redrive", pages.letters_action), methods=["POST"]),
        Route("/dead-letters/discard", a("dlq:discard", pages.letters_action), methods=["POST"]),
        Route("/dead-letters/{letter_id}", p("dlq:read", pages.letter), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return [(route, None) for route in routes]
