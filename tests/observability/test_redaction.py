"""Redaction and escaping: store URLs lose their credentials, control characters become text."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contexten import App
from contexten.bus.health import HealthReport, StoreHealth
from contexten.exceptions import ConfigurationError
from contexten.observability.redaction import (
    escape_control,
    is_sensitive_field,
    is_sensitive_parameter,
    redact_text,
    redact_url,
)
from contexten.store import create_store

PW = "Canary-pw-7Hq"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:***@db:5432/x"),
        (f"postgresql://app:{PW}@db/x?schema=s", "postgresql://app:***@db/x?schema=s"),
        (
            f"postgresql://app@db/x?sslmode=require&password={PW}&schema=s",
            "postgresql://app@db/x?sslmode=require&password=***&schema=s",
        ),
        (
            f"postgres://db/x?passfile=/home/a/.pgpass&sslpassword={PW}&sslkey=/k.pem",
            "postgres://db/x?passfile=***&sslpassword=***&sslkey=***",
        ),
        # An unencoded @ in the password: everything up to the last @ is userinfo.
        (f"postgresql://app:{PW}@x@db/x", "postgresql://app:***@db/x"),
        # No authority at all (a Unix socket): kept as written.
        (
            f"postgresql:///x?host=/run/pg&password={PW}",
            "postgresql:///x?host=/run/pg&password=***",
        ),
        ("redis://:secretpw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("sqlite:///var/lib/contexten.db", "sqlite:///var/lib/contexten.db"),
        ("memory://", "memory://"),
        ("postgresql://app@db/x?sslmode=require", "postgresql://app@db/x?sslmode=require"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_on_an_unparsable_url_still_redacts() -> None:
    assert PW not in redact_url(f"postgresql://app:{PW}@[::1/x")


@pytest.mark.parametrize(
    "text",
    [
        f"cannot connect to postgresql://app:{PW}@db:5432/x: refused",
        f"could not open 'postgresql://db/x?password={PW}&sslmode=require'",
        f"host=db port=5432 password={PW} dbname=x",
        f"host=db password='{PW} with spaces' dbname=x",
        f"GET /login?token={PW} HTTP/1.1",
        f"api_key={PW}; client_secret={PW}",
    ],
)
def test_redact_text_finds_credentials_inside_text(text: str) -> None:
    redacted = redact_text(text)
    assert PW not in redacted
    assert "***" in redacted


def test_redact_text_leaves_other_settings_alone() -> None:
    text = "author=ada dedup_key=abc sslmode=require host=db position=4"
    assert redact_text(text) == text
    assert redact_text("no settings here") == "no settings here"


def test_sensitive_names() -> None:
    for name in ("password", "sslpassword", "passfile", "sslkey", "access_token", "api_key"):
        assert is_sensitive_parameter(name), name
    for name in ("sslmode", "host", "schema", "author", "pool_size"):
        assert not is_sensitive_parameter(name), name
    for name in ("data", "payload", "headers", "api_token", "webhook_secret", "Authorization"):
        assert is_sensitive_field(name), name
    assert not is_sensitive_field("event_id")


def test_escape_control_keeps_a_value_on_one_inert_line() -> None:
    hostile = "title\n2030-01-01 [info] forged\r\x1b[2J\x1b]0;pwned\x07\x9b31m\u2028\u202eabc\t."
    escaped = escape_control(hostile)
    assert escaped == (
        "title\\n2030-01-01 [info] forged\\r\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u2028\\u202eabc\\t."
    )
    assert escape_control("plain ünïcode ✓ 日本") == "plain ünïcode ✓ 日本"


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or ch in "\u2028\u2029"


@given(st.text())
def test_escaped_text_has_no_control_characters(text: str) -> None:
    escaped = escape_control(text)
    assert not any(_is_control(ch) for ch in escaped)
    assert len(escaped.splitlines()) <= 1


@given(
    user=st.sampled_from(["app", "postgres", "u"]),
    secret=st.text(string.ascii_letters + string.digits + "!$%^*()-_+~", min_size=4),
)
def test_redact_url_never_shows_the_password(user: str, secret: str) -> None:
    password = f"PW{secret}"  # nothing else in the URL contains "PW"
    for url in (
        f"postgresql://{user}:{password}@db:5432/contexten",
        f"postgresql://{user}@db:5432/contexten?password={password}",
        f"postgresql://{user}@db:5432/contexten?sslmode=require&sslpassword={password}&x=1",
    ):
        assert password not in redact_url(url)
        assert password not in redact_text(f"failed: {url}: refused")


@pytest.mark.parametrize(
    "url",
    [f"postgresql://app:{PW}@127.0.0.1:1/x", f"postgresql://app@127.0.0.1:1/x?password={PW}"],
)
async def test_health_reprs_and_errors_never_show_the_store_password(url: str) -> None:
    app = App(url)
    assert PW not in repr(app)
    assert PW not in json.dumps((await app.health()).to_dict())
    quoted = HealthReport(
        running=True, store=StoreHealth(url, False, error=f"OSError: cannot reach {url}")
    )
    assert PW not in json.dumps(quoted.to_dict())
    with pytest.raises(ConfigurationError) as refused:
        create_store(url.replace("postgresql://", "postgresq1://"))
    assert PW not in str(refused.value)


# -- redact_secrets: payloads shown to a person (the dashboard) ----------------------------


def test_payload_fields_named_like_credentials_are_redacted_at_any_depth() -> None:
    from contexten.observability.redaction import REDACTED, redact_secrets

    payload = {
        "title": "keep me",
        "api_token": "canary-1",
        "nested": [{"Password": "canary-2", "ok": 1}, {"deeper": {"client_secret": "canary-3"}}],
        "headers": {"Authorization": "Bearer canary-4", "accept": "*/*"},
        "empty_token": "",
        "note": "see postgresql://app:canary-5@db/x",
    }
    redacted = redact_secrets(payload)
    text = repr(redacted)
    for canary in ("canary-1", "canary-2", "canary-3", "canary-4", "canary-5"):
        assert canary not in text
    assert redacted["title"] == "keep me"
    assert redacted["nested"][0] == {"Password": REDACTED, "ok": 1}
    assert redacted["headers"]["accept"] == "*/*"
    assert redacted["empty_token"] == ""  # nothing to hide
    assert payload["api_token"] == "canary-1"  # the input is not modified


def test_payloads_nested_too_deep_are_replaced_whole() -> None:
    from contexten.observability.redaction import REDACTED, redact_secrets

    value: object = "bottom"
    for _ in range(100):
        value = [value]
    out = redact_secrets(value)
    for _ in range(65):
        out = out[0]
    assert out == REDACTED


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.slack.com/services/T00000000/B00000000/canarysecret1",
            "https://hooks.slack.com/services/T00000000/B00000000/***",
        ),
        (
            "https://hooks.slack.com/actions/T0SANDBOX/1234567/canarysecret2",
            "https://hooks.slack.com/actions/T0SANDBOX/1234567/***",
        ),
        (
            "https://hooks.slack.com/commands/T1/22/canarysecret3",
            "https://hooks.slack.com/commands/T1/22/***",
        ),
        (
            "https://hooks.slack.com/workflows/T1/A2/345/canarysecret4",
            "https://hooks.slack.com/workflows/T1/A2/345/***",
        ),
        (
            "https://hooks.slack-gov.com/triggers/T1/22/canarysecret5",
            "https://hooks.slack-gov.com/triggers/T1/22/***",
        ),
    ],
)
def test_slack_capability_urls_lose_their_secret(url: str, shown: str) -> None:
    """Anyone holding an incoming-webhook URL or a response_url can post to the channel."""
    from contexten.observability.redaction import redact_secrets, redact_text

    assert redact_text(f"posting to {url} failed: 404") == f"posting to {shown} failed: 404"
    page = redact_secrets({"response_url": url, "blocks": [{"text": f"<{url}|here>"}]})
    assert "canarysecret" not in repr(page)
    assert page["response_url"] == shown
    # Other Slack addresses are not credentials.
    assert redact_text("https://slack.com/api/chat.postMessage") == (
        "https://slack.com/api/chat.postMessage"
    )
