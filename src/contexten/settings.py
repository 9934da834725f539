"""Settings read from the environment: one parser for the ones that are seconds.

Several layers take a duration from a ``CONTEXTEN_*`` variable (how long a starting process
waits for its store, lease and heartbeat times, the read models' linger). They share one
reading: unset or blank means the default; anything else must be a number of seconds in
range, or the process refuses to start with a message that names the variable.
"""

from __future__ import annotations

import math
import os

from contexten.exceptions import ConfigurationError

__all__ = ["seconds_from_env"]


def seconds_from_env(name: str, default: float, *, most: float | None = None) -> float:
    """Environment variable ``name`` as a number of seconds (``>= 0``, and ``<= most`` when
    given), or ``default`` when it is unset or blank.

    Raises:
        ConfigurationError: the variable is set to anything else (the message quotes at most
            40 characters of it).
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value >= 0 and (most is None or value <= most)):
        limit = ">= 0" if most is None else f"from 0 to {most:g}"
        raise ConfigurationError(f"{name} must be a number of seconds {limit}, not {raw[:40]!r}")
    return value
