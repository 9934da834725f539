"""The ingress: the ASGI app that verifies, deduplicates and durably stores webhooks, and
serves health, readiness, metrics and the event-log API.

::

    from contexten.ingress import IngressConfig, create_ingress_app

    app = create_ingress_app(store, IngressConfig.from_env())   # serve with uvicorn
"""

from contexten.ingress.app import HealthLike, Readiness, create_ingress_app
from contexten.ingress.config import IngressConfig
from contexten.ingress.receivers import Accepted

__all__ = ["Accepted", "HealthLike", "IngressConfig", "Readiness", "create_ingress_app"]
