"""The shared real GitHub webhook payloads, listed at collection time (for parametrize).

Resolves ``../shared/fixtures/github-webhooks`` from the repository root, as
``tests/conftest.py`` does; the ``github_fixtures`` fixture fails loudly when it is missing.
"""

from __future__ import annotations

from pathlib import Path

GITHUB_WEBHOOKS = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "github-webhooks"
)


def github_fixture_files() -> list[Path]:
    """Every ``<host>/<event>/<file>.json`` payload example, sorted."""
    if not GITHUB_WEBHOOKS.is_dir():
        return []
    return sorted(GITHUB_WEBHOOKS.glob("*/*/*.json"))
