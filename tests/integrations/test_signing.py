"""HMAC signing: the digest does not depend on how the signed bytes are fed in."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from contexten.integrations.signing import hmac_sha256_hex, matches_any


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 5 * 1024, 64 * 1024, 64 * 1024 + 1])
def test_hmac_matches_the_standard_library_at_every_size(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac_sha256_hex("s3cret", body) == expected
    assert hmac_sha256_hex(b"s3cret", body[:100], body[100:]) == expected
    assert matches_any([b"other", b"s3cret"], expected.upper(), body)
    assert not matches_any([b"other"], expected, body)
