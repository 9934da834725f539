"""Secrets from the environment, rotation, and keeping them out of reprs and errors."""

from __future__ import annotations

import pytest

from contexten.exceptions import ConfigurationError
from contexten.ingress import IngressConfig
from contexten.ingress.config import parse_secrets
from contexten.testing import VirtualClock


def test_secrets_from_the_environment() -> None:
    config = IngressConfig.from_env(
        {
            "CONTEXTEN_GITHUB_WEBHOOK_SECRET": " current , previous ",
            "CONTEXTEN_LINEAR_WEBHOOK_SECRET": "lin",
            "CONTEXTEN_LINEAR_TEAM_KEYS": "eng, ops,,",
        }
    )
    assert config.secrets("github") == (b"current", b"previous")
    assert config.secrets("linear") == (b"lin",)
    assert config.secrets("slack") == ()
    assert config.team_keys == frozenset({"ENG", "OPS"})
    assert config.max_body("github") == 25 * 1024 * 1024
    assert config.max_body("slack") == config.max_body("linear") == 1024 * 1024


def test_overrides() -> None:
    clock = VirtualClock()
    config = IngressConfig.from_env({}, clock=clock, body_timeout=3.0)
    assert config.clock is clock
    assert config.body_timeout == 3.0


@pytest.mark.parametrize(("raw", "expected"), [(None, ()), ("", ()), (" , ", ()), ("a", (b"a",))])
def test_parse_secrets(raw: str | None, expected: tuple[bytes, ...]) -> None:
    assert parse_secrets(raw) == expected


def test_more_than_two_secrets_is_a_configuration_error_that_hides_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_secrets("s3cr3t-one,s3cr3t-two,s3cr3t-three", name="CONTEXTEN_SLACK_SIGNING_SECRET")
    assert "s3cr3t" not in str(info.value)
    assert "CONTEXTEN_SLACK_SIGNING_SECRET" in str(info.value)


def test_repr_hides_secrets() -> None:
    config = IngressConfig.from_env(
        {"CONTEXTEN_GITHUB_WEBHOOK_SECRET": "hunter2", "CONTEXTEN_SLACK_SIGNING_SECRET": "xyzzy"}
    )
    text = repr(config) + str(config)
    assert "hunter2" not in text
    assert "xyzzy" not in text
    assert "github" in text


def test_security_settings_from_the_environment() -> None:
    default = IngressConfig.from_env({}, bind_host="10.1.2.3")
    assert default.allowed_hosts == ("localhost", "127.0.0.1", "::1", "10.1.2.3")
    assert default.admin_token is None
    assert default.metrics_public is False
    assert default.auth_failure_limit == 10
    env = {
        "CONTEXTEN_ALLOWED_HOSTS": "hooks.example.com, *.internal",
        "CONTEXTEN_ADMIN_TOKEN": "adm1n-t0ken-from-the-env",
    }
    config = IngressConfig.from_env(env, bind_host="0.0.0.0", metrics_public=True)
    assert config.allowed_hosts == ("hooks.example.com", "*.internal")
    assert config.admin_token == "adm1n-t0ken-from-the-env"
    assert config.metrics_public is True
    assert "adm1n" not in repr(config) + str(config)
    with pytest.raises(ConfigurationError, match="auth_failure_limit"):
        IngressConfig(auth_failure_limit=-1)
