"""The chaos tests' private PostgreSQL cluster (never the shared server)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ._pgcluster import PrivateCluster, find_pg_bin


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL cluster (not started), always stopped and deleted afterwards."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("CONTEXTEN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (CONTEXTEN_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    c = PrivateCluster(bin_dir)
    try:
        yield c
    finally:
        c.stop()
