"""B5 agents: 1,000 concurrent workflows, each doing 3 platform actions against the sandbox.

The sandbox runs in its own process (uvicorn on 127.0.0.1) with 50 ms of latency injected into
every API call. Each workflow does, with idempotency keys as a workflow step would:

1. ``github.create_issue_comment`` on its own issue (lookup for the key, then create);
2. ``linear.move_issue`` of its own issue to "In Progress" (read, then update; states cached);
3. ``slack.post_message`` in its own channel (history lookup for the key, then post).

Measured, side by side in one run:

* ``contexten``: the actions through Contexten's clients (pool per platform bounded at
  ``--pool`` connections, SSRF guard, adaptive rate limits, breaker, retries);
* ``raw httpx``: the same HTTP requests, in the same order, through one bare
  ``httpx.AsyncClient`` per platform with the same pool bound: the limit for this client stack.

For each: workflows/s, action latency p50/p99, and the *overhead* of an action over the latency
injected into it (``action time - requests x 50 ms``) p50/p99; the most connections open at
once (sampled), and the growth of the process's peak RSS. Contexten's own cost is the
difference between the two rows' overheads; the rest is the shared client, server and loop.

Run: ``.venv/bin/python bench/b5_agents.py [--workflows 1000] [--latency 0.05] [--pool 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from contexten.integrations import github, linear, slack
from contexten.integrations.codegen import CodegenClient
from contexten.integrations.github import GitHubClient
from contexten.integrations.linear import LinearClient
from contexten.integrations.slack import SlackClient

TOKEN = "bench-token"
_requests: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("n", default=None)


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the HTTP requests each action makes (per task, through a context variable)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        counter = _requests.get()
        if counter is not None:
            counter[0] += 1
        return await super().handle_async_request(request)


@dataclass
class Run:
    name: str
    seconds: float = 0.0
    actions: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    max_connections: int = 0
    rss_growth_mb: float = 0.0
    errors: int = 0
    lookups: int = 0  # Linear workflow-state/label lookups asked of the client
    lookup_reads: int = 0  # of which went to the Linear API (cache misses)

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000 if ordered else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def sandbox_process(port: int, latency: float) -> Any:
    """The sandbox served by uvicorn in a child process."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contexten.testing.sandbox",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the sandbox did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def seed(base: str, n: int) -> tuple[list[str], list[str]]:
    """One GitHub issue, Linear issue and Slack channel per workflow (not timed)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as control:
        issues: list[str] = []
        channels: list[str] = []
        for i in range(n):
            await control.post(
                "/_sandbox/github/issues", json={"repo": "acme/api", "title": f"#{i}"}
            )
            made = await control.post("/_sandbox/linear/issues", json={"title": f"Task {i}"})
            issues.append(made.json()["id"])
            channel = await control.post("/_sandbox/slack/channels", json={"name": f"wf-{i}"})
            channels.append(channel.json()["id"])
        return issues, channels


async def sample_connections(count: Callable[[], int], run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        run.max_connections = max(run.max_connections, count())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)


async def timed(run: Run, latency: float, action: Awaitable[Any]) -> None:
    counter = [0]
    token = _requests.set(counter)
    start = time.perf_counter()
    try:
        await action
    except Exception:
        run.errors += 1
        raise
    finally:
        _requests.reset(token)
    elapsed = time.perf_counter() - start
    run.actions.append(elapsed)
    run.overheads.append(elapsed - counter[0] * latency)


@contextlib.asynccontextmanager
async def contexten_clients(base: str, pool: int) -> AsyncIterator[dict[str, Any]]:
    def transport() -> CountingTransport:
        return CountingTransport(
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        )

    common = {"token": TOKEN, "max_connections": pool, "max_keepalive_connections": pool}
    clients = {
        "github": GitHubClient(base_url=f"{base}/github", transport=transport(), **common),
        "linear": LinearClient(base_url=f"{base}/linear", transport=transport(), **common),
        "slack": SlackClient(base_url=f"{base}/slack/api", transport=transport(), **common),
        "codegen": CodegenClient(
            base_url=f"{base}/codegen", org_id=1, transport=transport(), **common
        ),
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def run_contexten(
    base: str, n: int, latency: float, pool: int, issues: list[str], channels: list[str]
) -> Run:
    run = Run("contexten")
    async with contexten_clients(base, pool) as c:
        await linear.workflow_state(
            (await c["linear"].get_issue(issues[0]))["team"]["id"],
            "In Progress",
            client=c["linear"],
        )  # warm the state cache and the pools, as a running app would have

        async def workflow(i: int) -> None:
            key = f"b5:{i}"
            await timed(
                run,
                latency,
                github.create_issue_comment(
                    "acme/api",
                    i + 1,
                    f"Started {i}",
                    idempotency_key=f"{key}:1",
                    client=c["github"],
                ),
            )
            await timed(
                run,
                latency,
                linear.move_issue(
                    issues[i], state="In Progress", idempotency_key=f"{key}:2", client=c["linear"]
                ),
            )
            await timed(
                run,
                latency,
                slack.post_message(
                    channels[i],
                    f"Workflow {i} moving",
                    idempotency_key=f"{key}:3",
                    client=c["slack"],
                ),
            )

        def connections() -> int:
            return sum(client.http.open_connections() for client in c.values())

        await measure(run, n, workflow, connections)
        stats = c["linear"].lookup_cache.stats
        run.lookups = stats.l1_hits + stats.coalesced + stats.loads
        run.lookup_reads = stats.loads
    return run


async def run_raw(
    base: str, n: int, latency: float, pool: int, issues: list[str], channels: list[str]
) -> Run:
    run = Run("raw httpx")
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(
            base_url=f"{base}/github",
            transport=CountingTransport(limits=limits),
            headers=headers,
            timeout=30,
        ) as gh,
        httpx.AsyncClient(
            base_url=f"{base}/linear",
            transport=CountingTransport(limits=limits),
            headers={"Authorization": TOKEN},
            timeout=30,
        ) as lin,
        httpx.AsyncClient(
            base_url=f"{base}/slack/api",
            transport=CountingTransport(limits=limits),
            headers=headers,
            timeout=30,
        ) as sk,
    ):
        query = "query WorkflowStates { workflowStates { nodes { id name } } }"
        states = (await lin.post("/graphql", json={"query": query, "variables": {}})).json()
        in_progress = next(
            s["id"] for s in states["data"]["workflowStates"]["nodes"] if s["name"] == "In Progress"
        )

        async def comment(i: int) -> None:
            (await gh.get(f"/repos/acme/api/issues/{i + 1}/comments")).raise_for_status()
            (
                await gh.post(
                    f"/repos/acme/api/issues/{i + 1}/comments", json={"body": f"Started {i}"}
                )
            ).raise_for_status()

        async def move(i: int) -> None:
            q = "query Issue($id: String!) { issue(id: $id) { id } }"
            (await lin.post("/graphql", json={"query": q, "variables": {"id": issues[i]}}))
            m = "mutation IssueUpdate($id: String!, $input: IssueUpdateInput!) { issueUpdate }"
            variables = {"id": issues[i], "input": {"stateId": in_progress}}
            (await lin.post("/graphql", json={"query": m, "variables": variables}))

        async def post(i: int) -> None:
            await sk.get("/conversations.history", params={"channel": channels[i], "limit": 100})
            await sk.post("/chat.postMessage", json={"channel": channels[i], "text": f"wf {i}"})

        async def workflow(i: int) -> None:
            await timed(run, latency, comment(i))
            await timed(run, latency, move(i))
            await timed(run, latency, post(i))

        def connections() -> int:
            return sum(
                len(getattr(client._transport, "_pool").connections)  # noqa: B009
                for client in (gh, lin, sk)
            )

        await measure(run, n, workflow, connections)
    return run


async def measure(
    run: Run, n: int, workflow: Callable[[int], Awaitable[None]], connections: Callable[[], int]
) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_connections(connections, run, stop))
    start = time.perf_counter()
    results = await asyncio.gather(*(workflow(i) for i in range(n)), return_exceptions=True)
    run.seconds = time.perf_counter() - start
    stop.set()
    await sampler
    run.rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"{run.name}: {len(failures)} workflows failed, first: {failures[0]!r}")


async def per_request_cost(base: str, calls: int = 300) -> tuple[float, float]:
    """Mean wall time of one GET, sequential, no injected latency: raw httpx vs Contexten."""
    async with httpx.AsyncClient(
        base_url=f"{base}/github", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as raw:
        for _ in range(20):
            await raw.get("/repos/acme/api/pulls/1")
        start = time.perf_counter()
        for _ in range(calls):
            await raw.get("/repos/acme/api/issues/1/comments")
        raw_ms = (time.perf_counter() - start) / calls * 1000
    async with GitHubClient(base_url=f"{base}/github", token=TOKEN) as gh:
        for _ in range(20):
            await gh.http.request("GET", "/repos/acme/api/issues/1/comments")
        start = time.perf_counter()
        for _ in range(calls):
            await gh.http.request("GET", "/repos/acme/api/issues/1/comments")
        ours_ms = (time.perf_counter() - start) / calls * 1000
    return raw_ms, ours_ms


def table(runs: list[Run], n: int, latency: float, pool: int) -> str:
    lines = [
        f"B5: {n} concurrent workflows x 3 actions, {latency * 1000:.0f} ms injected per API call, "
        f"pool bound {pool} per platform",
        f"{'client stack':<12} {'wf/s':>7} {'act p50':>8} {'act p99':>8} {'ovh p50':>8} "
        f"{'ovh p99':>8} {'max conns':>9} {'RSS +MB':>8} {'errors':>6}",
    ]
    for r in runs:
        lines.append(
            f"{r.name:<12} {n / r.seconds:>7.0f} {Run.pct(r.actions, 0.5):>7.1f}ms "
            f"{Run.pct(r.actions, 0.99):>7.1f}ms {Run.pct(r.overheads, 0.5):>7.1f}ms "
            f"{Run.pct(r.overheads, 0.99):>7.1f}ms {r.max_connections:>9} "
            f"{r.rss_growth_mb:>8.1f} {r.errors:>6}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--pool", type=int, default=100)
    args = parser.parse_args()
    runs: list[Run] = []
    for runner in (run_raw, run_contexten):
        with sandbox_process(free_port(), 0.0) as base:
            issues, channels = await seed(base, args.workflows)
            if runner is run_contexten:
                raw_ms, ours_ms = await per_request_cost(base)
            async with httpx.AsyncClient(base_url=base) as control:
                await control.post(
                    "/_sandbox/faults",
                    json={"kind": "latency", "latency": args.latency, "times": None},
                )
            runs.append(
                await runner(base, args.workflows, args.latency, args.pool, issues, channels)
            )
    print(table(runs, args.workflows, args.latency, args.pool))
    ours = runs[-1]
    print(
        f"Linear lookups (workflow states, labels): {ours.lookups} asked, "
        f"{ours.lookup_reads} read from the API; without the lookup cache each is a read: "
        f"{ours.lookups - ours.lookup_reads} API calls saved"
    )
    print(
        f"one request, sequential, no injected latency: raw httpx {raw_ms:.2f} ms, "
        f"Contexten {ours_ms:.2f} ms (+{ours_ms - raw_ms:.2f} ms per request)"
    )


if __name__ == "__main__":
    asyncio.run(main())
