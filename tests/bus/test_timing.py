"""The handler-duration histogram counts into the right buckets."""

from __future__ import annotations

from contexten.bus.timing import DURATION_BUCKETS, DurationHistogram


def test_observations_land_in_the_first_bucket_that_holds_them() -> None:
    h = DurationHistogram()
    for seconds in (0.0001, 0.0005, 0.0007, 0.3, 120.0):
        h.observe(seconds)
    snap = h.snapshot()
    assert snap.count == 5
    assert abs(snap.total - 120.3013) < 1e-9
    cumulative = dict(snap.cumulative())
    assert cumulative["0.0005"] == 2  # le=0.0005 includes the bound itself
    assert cumulative["0.001"] == 3
    assert cumulative["0.25"] == 3
    assert cumulative["0.5"] == 4
    assert cumulative[repr(DURATION_BUCKETS[-1])] == 4
    assert cumulative["+Inf"] == 5
    assert list(cumulative) == [*map(repr, DURATION_BUCKETS), "+Inf"]
