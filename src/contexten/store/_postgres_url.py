"""The PostgreSQL event store's URL: asyncpg's DSN plus the store's own options.

See :mod:`contexten.store.postgres` for the URL forms and the options.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from contexten.exceptions import ConfigurationError
from contexten.observability.redaction import redact_url
from contexten.store._postgres_schema import SCHEMA_NAME_RE

__all__ = ["PostgresSettings", "parse_postgres_url"]

_SCHEMES: Final = frozenset({"postgres", "postgresql"})


class PostgresSettings:
    """The store's settings from its URL (and constructor overrides), validated.

    Attributes:
        dsn: the URL without the store's own options, as asyncpg takes it.
        where: the URL without password or options, plus the schema: safe for messages.
    """

    __slots__ = (
        "command_timeout",
        "connect_timeout",
        "dsn",
        "pool_min",
        "pool_size",
        "schema",
        "where",
    )

    def __init__(
        self,
        dsn: str,
        where: str,
        *,
        schema: str = "contexten",
        pool_size: int = 10,
        pool_min: int = 1,
        command_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.where = f"{where} (schema {schema})"
        self.schema = schema
        self.pool_size = pool_size
        self.pool_min = pool_min
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        if not SCHEMA_NAME_RE.match(schema):
            raise ConfigurationError(
                f"{where}: schema {schema!r} must be a plain identifier (letters, digits, "
                "underscores; not starting with a digit; at most 50 characters)"
            )
        if pool_size < 2 or not 0 <= pool_min <= pool_size:
            raise ConfigurationError(
                f"{where}: need pool_size >= 2 (the writer keeps one connection) "
                "and 0 <= pool_min <= pool_size"
            )
        if command_timeout <= 0 or connect_timeout <= 0:
            raise ConfigurationError(f"{where}: command_timeout and connect_timeout must be > 0")


_OPTIONS: Final[dict[str, tuple[type, str]]] = {
    "schema": (str, "a schema name"),
    "pool_size": (int, "a whole number"),
    "pool_min": (int, "a whole number"),
    "command_timeout": (float, "a number of seconds"),
    "connect_timeout": (float, "a number of seconds"),
}


def parse_postgres_url(url: str, **overrides: Any) -> PostgresSettings:
    """Split a ``postgresql://`` URL into asyncpg's DSN and the store's options.

    ``overrides`` (non-None values) win over the URL's options.

    Raises:
        ConfigurationError: not a PostgreSQL URL, or a bad option.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigurationError(
            f"{redact_url(url)!r} is not a PostgreSQL URL (postgresql://user@host:5432/database)"
        )
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    where = f"{parts.scheme}://{user}{at}{hostport}{parts.path}"
    options: dict[str, Any] = {}
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS:
            passed.append((name, value))
            continue
        kind, described = _OPTIONS[name]
        try:
            options[name] = kind(value)
        except ValueError:
            raise ConfigurationError(
                f"{where}: option {name!r} must be {described}, got {value!r}"
            ) from None
    options.update({k: v for k, v in overrides.items() if v is not None})
    dsn = urlunsplit(parts._replace(query=urlencode(passed)))
    return PostgresSettings(dsn, where, **options)
