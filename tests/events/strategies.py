"""Hypothesis strategies for events: JSON data, type names and whole envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from contexten.events import Event

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)

segments = st.from_regex(r"[a-z0-9_][a-z0-9_\-]{0,7}", fullmatch=True)
event_types = st.lists(segments, min_size=1, max_size=4).map(".".join)

offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
    lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))
)
times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC) | offsets
)
optional_text = st.none() | st.text(min_size=1, max_size=20)

events = st.builds(
    Event,
    type=event_types,
    source=st.text(min_size=1, max_size=20),
    data=json_objects,
    subject=optional_text,
    id=st.text(min_size=1, max_size=40),
    time=times,
    correlation_id=optional_text,
    causation_id=optional_text,
    delivery_id=optional_text,
    actor=optional_text,
    traceparent=optional_text,
)
