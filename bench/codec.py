"""Event JSON codec: msgspec (what Contexten uses) against orjson and the standard library.

Encodes and decodes a realistic event (a GitHub pull_request payload of ~5 KB) many times
and prints operations per second. Run: ``.venv/bin/python bench/codec.py``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from contexten.events import Event, decode_event, encode_event

try:
    import orjson
except ImportError:  # pragma: no cover - optional peer
    orjson = None  # type: ignore[assignment]

N = 20_000


def payload() -> dict[str, Any]:
    user = {
        "login": "octocat",
        "id": 1,
        "type": "User",
        "site_admin": False,
        "url": "https://api.github.com/users/octocat",
    }
    repo = {
        "id": 1296269,
        "name": "Hello-World",
        "full_name": "octocat/Hello-World",
        "owner": user,
        "private": False,
        "description": "This your first repo!",
        "topics": ["octocat", "atom", "electron", "api"],
        "stargazers_count": 80,
    }
    pr = {
        "number": 1347,
        "state": "open",
        "title": "Amazing new feature ENG-123",
        "body": "Please pull these awesome changes in! " * 40,
        "user": user,
        "labels": [{"id": 208045946, "name": "bug", "color": "f29513"}] * 3,
        "head": {
            "ref": "eng-123-feature",
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "repo": repo,
        },
        "base": {"ref": "main", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "repo": repo},
        "merged": False,
        "comments": 10,
        "additions": 100,
        "deletions": 3,
    }
    return {
        "action": "opened",
        "number": 1347,
        "pull_request": pr,
        "repository": repo,
        "sender": user,
    }


def bench(name: str, fn: Any) -> tuple[str, float]:
    fn()
    start = time.perf_counter()
    for _ in range(N):
        fn()
    return name, N / (time.perf_counter() - start)


def main() -> None:
    event = Event(
        type="github.pull_request.opened",
        source="github",
        data=payload(),
        subject="octocat/Hello-World#1347",
        correlation_id="ENG-123",
    )
    raw = encode_event(event)
    as_dict = msgspec.to_builtins(event)
    rows = [
        bench("msgspec encode (Event)", lambda: encode_event(event)),
        bench("msgspec decode (Event, typed)", lambda: decode_event(raw)),
        bench("stdlib json.dumps (dict)", lambda: json.dumps(as_dict).encode()),
        bench(
            "stdlib json.loads + build Event",
            lambda: Event(**{**json.loads(raw), "time": datetime.now(UTC)}),
        ),
    ]
    if orjson is not None:
        rows += [
            bench("orjson dumps (dict)", lambda: orjson.dumps(as_dict)),
            bench(
                "orjson loads + build Event",
                lambda: Event(**{**orjson.loads(raw), "time": datetime.now(UTC)}),
            ),
        ]
    print(f"event JSON size: {len(raw)} bytes, {N} iterations each")
    print(f"{'codec':40} {'ops/s':>12}")
    for name, rate in rows:
        print(f"{name:40} {rate:12,.0f}")


if __name__ == "__main__":
    main()
