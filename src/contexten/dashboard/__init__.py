"""The dashboard: watch and steer a running app in a browser.

Server-rendered pages (Jinja2, autoescaped), htmx for the live parts, server-sent events for
new events, no JavaScript build and nothing downloaded at run time (htmx is vendored in
``static/vendor`` with its licence). Served at ``/`` by ``contexten serve`` and
``contexten demo``; see :mod:`contexten.dashboard.app` for the pages and what each needs.
"""

from contexten.dashboard.app import STATIC_DIR, dashboard_routes
from contexten.dashboard.data import DashboardData, DashboardHost, EventFilter

__all__ = ["STATIC_DIR", "DashboardData", "DashboardHost", "EventFilter", "dashboard_routes"]
