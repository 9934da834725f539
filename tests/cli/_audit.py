"""Reading back the audit events a command recorded."""

from __future__ import annotations

import asyncio
from typing import Any

from contexten.security import AUDIT_STREAM_PREFIX
from contexten.store import create_store


def audit_events(url: str) -> list[dict[str, Any]]:
    """Every audit event in the store at ``url``: type, target, outcome, principal, client."""

    async def read() -> list[dict[str, Any]]:
        async with create_store(url) as store:
            streams = await store.list_streams(AUDIT_STREAM_PREFIX)
            records = [r for s in streams for r in await store.read_stream(s.stream)]
        records.sort(key=lambda r: r.position)
        return [
            {
                "type": r.event.type,
                "target": r.event.data.get("target"),
                "outcome": r.event.data["outcome"],
                "principal": r.event.data["principal"],
                "client": r.event.data["client"],
                "text": repr(r.event.data),
            }
            for r in records
        ]

    return asyncio.run(read())
