"""Outbound SSRF guard: platform clients talk to their configured API hosts and nothing else.

A URL is allowed when its scheme is http(s), its host is one of the client's configured hosts
(the base URL's host plus any extra ones, such as ``hooks.slack.com`` for Slack's
``response_url``), and, unless private networks were opted into, every address the host
resolves to is public. Private, loopback, link-local and reserved addresses are allowed only
when the base URL itself points at one (the local sandbox, a GitHub Enterprise Server on the
office network via ``allow_private_network=True``).

The check runs before a connection is opened, so a refused target sees no connection at all.
Resolution results are cached briefly; a hostile DNS server could still answer differently
between the check and the connect (rebinding), which the host allowlist bounds to the
configured API hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable

import httpx

from contexten.exceptions import SSRFBlocked

__all__ = ["Resolver", "SSRFGuard", "is_private_address"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves ``(host, port)`` to IP address strings (injectable for tests)."""

_CACHE_TTL = 60.0


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({str(info[4][0]) for info in infos})


def is_private_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is loopback, private, link-local or reserved."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _points_at_private(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return is_private_address(host)
    except ValueError:
        return False


class SSRFGuard:
    """Refuses requests to anything but the configured API hosts.

    Args:
        base_url: the client's base URL; its host is allowed.
        allowed_hosts: more hosts the client may call (exact names, lower case).
        allow_private_network: allow private and loopback addresses even though the base
            URL's host name does not literally point at one.
        resolver: name resolution (default: the event loop's ``getaddrinfo``).
    """

    def __init__(
        self,
        base_url: str | httpx.URL,
        allowed_hosts: tuple[str, ...] = (),
        *,
        allow_private_network: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise SSRFBlocked(f"base URL {str(url)!r} is not an absolute http(s) URL")
        self.hosts = frozenset({url.host.lower(), *(h.lower() for h in allowed_hosts)})
        self.allow_private = allow_private_network or _points_at_private(url.host)
        self._resolver = resolver or _system_resolver
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def check(self, url: httpx.URL, *, platform: str = "") -> None:
        """Raise :class:`SSRFBlocked` unless ``url`` may be called."""
        if url.scheme not in ("http", "https"):
            raise SSRFBlocked(f"scheme {url.scheme!r} is not allowed", platform=platform)
        host = url.host.lower()
        if host not in self.hosts:
            raise SSRFBlocked(
                f"host {host!r} is not a configured API host ({', '.join(sorted(self.hosts))})",
                platform=platform,
            )
        if self.allow_private:
            return
        port = url.port or (443 if url.scheme == "https" else 80)
        for address in await self._resolve(host, port):
            if is_private_address(address):
                raise SSRFBlocked(
                    f"host {host!r} resolves to a non-public address ({address})",
                    platform=platform,
                )

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        now = time.monotonic()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = await self._resolver(host, port)
        except OSError:
            # Let the connect fail the normal way (a transient ConnectError).
            return []
        self._cache[(host, port)] = (now + _CACHE_TTL, addresses)
        return addresses
