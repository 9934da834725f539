"""REST API v1 (OpenAPI described) over the read models; see :mod:`contexten.api.v1`."""

from contexten.api.v1 import DEFAULT_LIMIT, MAX_LIMIT, ReadAPI

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ReadAPI"]
