"""Who may do what: API tokens, roles, the one permission check, audit events, host checks.

::

    from contexten.security import Role, allowed, create_token

    issued = await create_token(store, name="grafana", role=Role.VIEWER)  # shown once
    allowed(principal, "dlq:redrive")                                      # operator and up

The HTTP side is :class:`SecurityMiddleware`, which :func:`contexten.ingress.create_ingress_app`
applies to every route but the signed webhooks.
"""

from contexten.security.audit import (
    AUDIT_STREAM_PREFIX,
    AUTH_DENIED,
    AUTH_FAILED,
    AUTH_THROTTLED,
    audit_stream,
    audit_type,
    cli_client,
    cli_principal,
    record_audit,
)
from contexten.security.hosts import (
    ENV_ALLOWED_HOSTS,
    LOOPBACK_HOSTS,
    AllowedHosts,
    default_allowed_hosts,
    host_name,
)
from contexten.security.middleware import (
    AUTHENTICATED,
    RouteAction,
    SecurityMiddleware,
    principal_of,
    verbose_requested,
)
from contexten.security.roles import ACTIONS, Principal, Role, allowed, required_role
from contexten.security.throttle import FailureThrottle
from contexten.security.tokens import (
    ENV_ADMIN_TOKEN,
    MIN_ADMIN_TOKEN_LENGTH,
    TOKEN_CREATED,
    TOKEN_PREFIX,
    TOKEN_REVOKED,
    TOKENS_STREAM,
    IssuedToken,
    TokenInfo,
    TokenRegistry,
    create_token,
    ensure_bootstrap_token,
    hash_token,
    list_tokens,
    revoke_token,
    token_id_of,
)
from contexten.security.visibility import (
    RESTRICTED_STREAMS,
    SECURITY_STREAM_PREFIX,
    hidden_streams,
)

__all__ = [
    "ACTIONS",
    "AUDIT_STREAM_PREFIX",
    "AUTHENTICATED",
    "AUTH_DENIED",
    "AUTH_FAILED",
    "AUTH_THROTTLED",
    "ENV_ADMIN_TOKEN",
    "ENV_ALLOWED_HOSTS",
    "LOOPBACK_HOSTS",
    "MIN_ADMIN_TOKEN_LENGTH",
    "RESTRICTED_STREAMS",
    "SECURITY_STREAM_PREFIX",
    "TOKENS_STREAM",
    "TOKEN_CREATED",
    "TOKEN_PREFIX",
    "TOKEN_REVOKED",
    "AllowedHosts",
    "FailureThrottle",
    "IssuedToken",
    "Principal",
    "Role",
    "RouteAction",
    "SecurityMiddleware",
    "TokenInfo",
    "TokenRegistry",
    "allowed",
    "audit_stream",
    "audit_type",
    "cli_client",
    "cli_principal",
    "create_token",
    "default_allowed_hosts",
    "ensure_bootstrap_token",
    "hash_token",
    "hidden_streams",
    "host_name",
    "list_tokens",
    "principal_of",
    "record_audit",
    "required_role",
    "revoke_token",
    "token_id_of",
    "verbose_requested",
]
