"""The Host check's parsing and matching (the DNS-rebinding request itself is refused in
tests/ingress/test_ingress_auth.py, over the app)."""

from __future__ import annotations

import pytest

from contexten.security import AllowedHosts, default_allowed_hosts, host_name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8000", "localhost"),
        ("LOCALHOST", "localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("example.com.", "example.com"),
        (" api.example.com:443 ", "api.example.com"),
    ],
)
def test_host_name_strips_port_brackets_case_and_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_the_default_is_loopback_plus_the_bind_address() -> None:
    hosts = AllowedHosts(default_allowed_hosts("10.0.0.5"))
    for ok in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.0.0.5:8000"):
        assert hosts.allows(ok), ok
    for refused in ("evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "", None):
        assert not hosts.allows(refused), refused


def test_wildcards_match_subdomains_only_and_star_matches_all() -> None:
    hosts = AllowedHosts(["*.example.com", "hooks.acme.io"])
    assert hosts.allows("api.example.com")
    assert hosts.allows("a.b.example.com:8443")
    assert not hosts.allows("example.com")
    assert not hosts.allows("evilexample.com")
    assert hosts.allows("HOOKS.acme.io")
    assert not hosts.allows("localhost")
    assert AllowedHosts(["*"]).allows("anything.at.all")
    assert not AllowedHosts(["*"]).allows(None)


def test_the_environment_replaces_the_default() -> None:
    env = {"CONTEXTEN_ALLOWED_HOSTS": "contexten.example.com, localhost"}
    hosts = AllowedHosts.from_env(env, bind_host="0.0.0.0")
    assert hosts.patterns == ("contexten.example.com", "localhost")
    assert not hosts.allows("127.0.0.1")
    assert AllowedHosts.from_env({}, bind_host="192.168.1.2").allows("192.168.1.2:80")
