"""The ``Host`` header check that stops DNS rebinding.

A page in a browser can make its own domain resolve to 127.0.0.1 and then read a local
``contexten serve`` or ``contexten demo`` as if it were the page's server: the browser sends
the attacker's name in ``Host``. Refusing every request whose ``Host`` is not a name this
server is known by (400) closes that door; webhooks are exempt, since platforms call the
public name and their requests are signed.

``CONTEXTEN_ALLOWED_HOSTS`` is a comma-separated list of host names (no port): exact names,
``*.example.com`` for any subdomain, or ``*`` for any (only behind a proxy that checks
``Host`` itself). Unset, the allowed hosts are the bind address, ``localhost``,
``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "ENV_ALLOWED_HOSTS",
    "LOOPBACK_HOSTS",
    "AllowedHosts",
    "default_allowed_hosts",
    "host_name",
]

ENV_ALLOWED_HOSTS: Final = "CONTEXTEN_ALLOWED_HOSTS"
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """The host of a ``Host`` header value: lower-case, without port, brackets or final dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:8000
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def default_allowed_hosts(bind_host: str | None = None) -> tuple[str, ...]:
    """The loopback names, plus ``bind_host`` when given."""
    hosts = list(LOOPBACK_HOSTS)
    if bind_host:
        name = host_name(bind_host)
        if name not in hosts:
            hosts.append(name)
    return tuple(hosts)


class AllowedHosts:
    """Answers whether a ``Host`` header names this server.

    Args:
        patterns: host names, ``*.domain`` wildcards, or ``*``.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        cleaned = [p.strip().lower().rstrip(".") for p in patterns if p.strip()]
        self.patterns: tuple[str, ...] = tuple(cleaned)
        self._any = "*" in cleaned
        self._exact = frozenset(host_name(p) for p in cleaned if not p.startswith("*"))
        self._suffixes = tuple(p[1:] for p in cleaned if p.startswith("*."))

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, bind_host: str | None = None
    ) -> AllowedHosts:
        """``CONTEXTEN_ALLOWED_HOSTS`` from ``env`` (default: ``os.environ``), else the
        defaults for ``bind_host``."""
        env = os.environ if env is None else env
        raw = env.get(ENV_ALLOWED_HOSTS, "")
        names = [p for p in raw.split(",") if p.strip()]
        return cls(names or default_allowed_hosts(bind_host))

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header (None: none sent) may be answered."""
        if header is None or not header.strip():
            return False
        if self._any:
            return True
        name = host_name(header)
        return name in self._exact or any(
            name.endswith(suffix) and len(name) > len(suffix) for suffix in self._suffixes
        )

    def __repr__(self) -> str:
        return f"AllowedHosts({list(self.patterns)!r})"
