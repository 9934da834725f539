"""Redaction before display: credentials by field name, anywhere in a payload."""

from __future__ import annotations

from contexten.observability.logging import REDACTED
from contexten.observability.redaction import is_secret_name, redact_secrets


def test_fields_named_like_credentials_are_redacted_at_any_depth() -> None:
    payload = {
        "title": "keep me",
        "api_token": "canary-1",
        "nested": [{"Password": "canary-2", "ok": 1}, {"deeper": {"client_secret": "canary-3"}}],
        "headers": {"Authorization": "Bearer canary-4", "accept": "*/*"},
        "empty_token": "",
    }
    redacted = redact_secrets(payload)
    text = repr(redacted)
    for canary in ("canary-1", "canary-2", "canary-3", "canary-4"):
        assert canary not in text
    assert redacted["title"] == "keep me"
    assert redacted["nested"][0] == {"Password": REDACTED, "ok": 1}
    assert redacted["headers"]["accept"] == "*/*"
    assert redacted["empty_token"] == ""  # nothing to hide
    assert payload["api_token"] == "canary-1"  # the input is not modified


def test_names() -> None:
    assert is_secret_name("X-Hub-Signature-256")
    assert is_secret_name("webhook_secret")
    assert not is_secret_name("title")


def test_deep_values_are_replaced_whole() -> None:
    value: object = "bottom"
    for _ in range(100):
        value = [value]
    out = redact_secrets(value)
    for _ in range(65):
        out = out[0]
    assert out == REDACTED
