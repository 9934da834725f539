"""B3 ingress: signed 5 KB GitHub webhooks over loopback, durable ingest vs the bare limit.

Side by side in one run, each server in its own subprocess on one uvicorn worker:

* **bare**: a Starlette handler that only reads the body, verifies the HMAC and parses the
  JSON, then answers 202 (the limit: no storage);
* **bare-durable**: the same handler that also inserts the body by raw SQLite group commit
  (WAL, ``synchronous=FULL``, ``bench/_group_commit.py``) and answers once it is committed
  (the durable limit: what any server that acks only stored webhooks must at least do);
* **contexten**: ``contexten serve``'s server (``IngressServer``) for a bare ``App`` on SQLite
  (WAL, ``synchronous=FULL``, group commit): verify, normalise, dedup and commit, then 202;
  the same process keeps the read models and would dispatch (the all-in-one default);
* **contexten-ingest**: the same server for an ``App(dispatch=False)``, what
  ``contexten serve --no-dispatch`` runs when workers do the rest (see "Scaling out" in the
  README): the webhook path alone, with every check and the same durable commit.

Throughput runs hit each server at 50 and 1,000 connections for ``--seconds`` (default 15)
and report requests/s, p50 and p99, and the server's CPU time per request: counted from the
start of the load until the server is idle again, so work a server leaves for after the load
(read models behind the log) is counted too ("busy ... after" says how long that took).
The load generator is ``wrk`` when installed (Debian: ``apt-get install -y wrk``; a Lua
script varies ``X-GitHub-Delivery`` per request over one pre-signed ``push`` body, valid
since the HMAC covers only the body), else a bounded Python raw-socket client (slower: it
may be the bottleneck, and the report says which was used).

The latency run offers a steady ``--rate`` (default 500) requests/s to a Contexten server
whose App has one handler, from a Python raw-socket client that puts the send time in each
(individually signed) body; the handler records request -> handler start.

Targets (issue 4): contexten >= 60% of bare's requests/s, p99 < 25 ms at 50 connections,
p99 request -> handler start < 25 ms at 500 requests/s. The report also gives each
Contexten row as a share of bare-durable.

Current results, with the command that produced them, are in ``bench/README.md``.

With ``--granian`` (``pip install granian``), the same two servers also run on Granian (one
worker, uvloop, the ASGI interface) in the same run, as rows ``bare-granian`` and
``contexten-granian``: the server a user might pick instead of uvicorn. Granian bypasses the
front door (its connection limits are uvicorn protocol classes), so that row measures
throughput only.

Run: ``.venv/bin/python bench/b3_ingress.py [--seconds 15] [--rate 500] [--impl auto|h11]
[--granian]`` (``--impl h11`` forces uvicorn's pure-Python h11 parser and the asyncio loop;
``auto`` uses httptools and uvloop when installed, as ``contexten serve`` does.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _group_commit import GroupCommitWriter

SECRET = "b3-bench-secret"
BODY_SIZE = 5 * 1024
READY_TIMEOUT = 30.0


def push_payload(size: int = BODY_SIZE, **extra: Any) -> dict[str, Any]:
    """A GitHub ``push`` payload padded to about ``size`` bytes with commit messages."""
    payload: dict[str, Any] = {
        "ref": "refs/heads/main",
        "before": "a" * 40,
        "after": "b" * 40,
        "repository": {"full_name": "octo/bench", "id": 1},
        "pusher": {"name": "alice"},
        "sender": {"login": "alice"},
        "commits": [],
        **extra,
    }
    i = 0
    while len(json.dumps(payload)) < size - 120:
        payload["commits"].append({"id": f"{i:040x}", "message": f"ENG-{i}: change " + "x" * 60})
        i += 1
    return payload


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# -- the servers (run in their own subprocess) ----------------------------------------------


def bare_app(durable_db: str | None = None) -> Any:
    """The limit: read, verify, parse, answer (also Granian's factory target).

    With ``durable_db``, the durable limit: the same handler also inserts the body into
    SQLite by raw group commit (``bench/_group_commit.py``: WAL, ``synchronous=FULL``, one
    writer thread, one transaction per batch) and answers once its batch is committed. That
    is the least any server can do that acknowledges a webhook only once it is on disk.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    secret = SECRET.encode()
    writer: GroupCommitWriter | None = None

    async def webhook(request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-hub-signature-256", "")):
            return Response(status_code=401)
        json.loads(body)
        if writer is not None:
            await writer.insert(body)
        return JSONResponse({"status": "accepted"}, 202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal writer
        if durable_db is not None:
            writer = GroupCommitWriter(Path(durable_db))
        try:
            yield
        finally:
            if writer is not None:
                writer.close()

    return Starlette(
        routes=[
            Route("/webhooks/github", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve_bare(port: int, impl: str, durable_db: str | None = None) -> None:
    """The bare server on uvicorn (durable with ``durable_db``, see :func:`bare_app`)."""
    import uvicorn

    http, loop = _uvicorn_impl(impl)
    uvicorn.run(
        bare_app(durable_db), host="127.0.0.1", port=port, log_level="warning", http=http,
        loop=loop, access_log=False, server_header=False,
    )  # fmt: skip


def serve_contexten(
    port: int,
    impl: str,
    db: str,
    latency_out: str | None,
    trace: bool = False,
    trace_before: str | None = None,
    dispatch: bool = True,
) -> None:
    """contexten serve's server for an App on SQLite (with a recording handler if asked;
    with ``trace``, OpenTelemetry on: 100% sampled, batch processor, spans dropped; with
    ``trace_before`` too, the tracing module of that git ref)."""
    from contexten import App, Event, HandlerContext
    from contexten.ingress import IngressConfig
    from contexten.ingress.server import IngressServer
    from contexten.observability.logging import configure_logging

    configure_logging(level="WARNING")
    if trace:
        import _tracing_before

        previous = _tracing_before.load(trace_before) if trace_before else None
        _tracing_before.switch("before" if previous else "on", previous)
    os.environ["CONTEXTEN_GITHUB_WEBHOOK_SECRET"] = SECRET
    app = App(f"sqlite:///{db}", dispatch=dispatch)
    if latency_out:
        delays: list[float] = []

        @app.on("github.push", name="b3-latency")
        async def record(event: Event, ctx: HandlerContext) -> None:
            sent = event.data.get("sent_at")
            if isinstance(sent, float):
                delays.append(time.time() - sent)

        @app.on_shutdown
        async def dump() -> None:
            await asyncio.to_thread(Path(latency_out).write_text, json.dumps(delays))

    http, loop = _uvicorn_impl(impl)
    IngressServer(app, port=port, config=IngressConfig.from_env(), http=http, loop=loop).run()


def granian_contexten() -> Any:
    """Granian's factory target for contexten serve's ASGI app on SQLite (``B3_DB``)."""
    from contexten import App
    from contexten.ingress import IngressConfig
    from contexten.ingress.server import create_server
    from contexten.observability.logging import configure_logging

    configure_logging(level="WARNING")
    os.environ["CONTEXTEN_GITHUB_WEBHOOK_SECRET"] = SECRET
    app = App(f"sqlite:///{os.environ['B3_DB']}")
    return create_server(app, IngressConfig.from_env(bind_host="127.0.0.1"), close_store=True)


def _granian_command(kind: str, port: int) -> list[str]:
    granian = str(Path(sys.executable).with_name("granian"))
    target = "b3_ingress:bare_app" if kind == "bare" else "b3_ingress:granian_contexten"
    return [
        granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--log-level", "warning", "--no-ws",
        "--factory", target,
    ]  # fmt: skip


def _uvicorn_impl(impl: str) -> tuple[str, str]:
    return ("h11", "asyncio") if impl == "h11" else ("auto", "auto")


# -- running servers from the parent ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(kind: str, impl: str, *extra: str) -> Any:
    port = free_port()
    if kind.endswith("-granian"):
        db = extra[extra.index("--db") + 1] if "--db" in extra else ""
        env = {**os.environ, "B3_DB": db, "PYTHONPATH": os.pathsep.join(sys.path)}
        command = _granian_command(kind.removesuffix("-granian"), port)
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, cwd=Path(__file__).parent, env=env
        )
    else:
        command = [sys.executable, __file__, "--port", str(port), "--impl", impl]
        if kind == "contexten-ingest":
            command += ["--serve", "contexten", "--no-dispatch"]
        elif kind == "bare-durable":
            command += ["--serve", "bare"]
        else:
            command += ["--serve", kind]
        proc = subprocess.Popen([*command, *extra], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- load generators ----------------------------------------------------------------------------


@dataclass
class Load:
    server: str
    connections: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    generator: str
    cpu_us: float = float("nan")
    """Server CPU time (all its threads and child processes) per answered request, in us."""
    loop_us: float = float("nan")
    """CPU time of the server's main thread (its event loop, on uvicorn) per request, in us."""
    settle_s: float = 0.0
    """Seconds the server kept working after the load ended (read models catching up)."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


_WRK_SCRIPT = """
local body = io.open(os.getenv("B3_BODY"), "rb"):read("*a")
local signature = os.getenv("B3_SIGNATURE")
local prefix = os.getenv("B3_PREFIX")
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = signature
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local headers = nil
function request()
  if headers == nil then  -- wrk.format's headers replace wrk.headers: copy them once
    headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
  end
  counter = counter + 1
  headers["X-GitHub-Delivery"] = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format(nil, "/webhooks/github", headers)
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(name: str, port: int, connections: int, seconds: float, workdir: Path) -> Load:
    body = json.dumps(push_payload()).encode()
    (workdir / "body.json").write_bytes(body)
    (workdir / "sign.lua").write_text(_WRK_SCRIPT)
    env = {
        **os.environ,
        "B3_BODY": str(workdir / "body.json"),
        "B3_SIGNATURE": sign(body),
        "B3_PREFIX": uuid.uuid4().hex[:12],
    }
    command = [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "10s", "-s", str(workdir / "sign.lua"), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert done, out
    requests, duration = int(done.group(1)), _ms(done.group(2) + done.group(3)) / 1000
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock_errors:
        errors += sum(int(g) for g in sock_errors.groups())
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    assert p50, out
    assert p99, out
    return Load(name, connections, requests, duration, errors, _ms(p50.group(1)),
                _ms(p99.group(1)), "wrk")  # fmt: skip


class RawClient:
    """One keep-alive HTTP/1.1 connection speaking just enough to post and read answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            (
                f"POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n"
            ).encode()
            + body
        )
        status_line = await self.reader.readuntil(b"\r\n")
        raw_headers = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", raw_headers)
        await self.reader.readexactly(int(length.group(1)) if length else 0)
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def run_python(name: str, port: int, connections: int, seconds: float) -> Load:
    """Closed loop: ``connections`` clients, each posting as soon as its last answer came."""
    body = json.dumps(push_payload()).encode()
    base = {"Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-Hub-Signature-256": sign(body)}  # fmt: skip
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        conn = RawClient(port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                headers = {**base, "X-GitHub-Delivery": uuid.uuid4().hex}
                try:
                    status = await conn.post(body, headers)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    conn = RawClient(port)
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not 200 <= status < 300
        finally:
            await conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    return Load(name, connections, len(latencies), elapsed, errors, _pct(latencies, 0.5),
                _pct(latencies, 0.99), "python")  # fmt: skip


async def run_steady(port: int, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open loop: one request every 1/rate s, each body signed with its send time in it."""
    pool: asyncio.Queue[RawClient] = asyncio.Queue()
    for _ in range(200):
        pool.put_nowait(RawClient(port))
    http_ms: list[float] = []
    errors = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        nonlocal errors
        conn = await pool.get()
        sent = time.time()
        body = json.dumps(push_payload(sent_at=sent)).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": uuid.uuid4().hex,
            "X-Hub-Signature-256": sign(body),
        }
        started = time.perf_counter()
        try:
            status = await conn.post(body, headers)
            http_ms.append((time.perf_counter() - started) * 1000)
            errors += not 200 <= status < 300
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            await conn.close()
            conn = RawClient(port)
        pool.put_nowait(conn)

    interval = 1.0 / rate
    began = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = began + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return http_ms, errors


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by ``pid`` with its descendants, and by its main thread alone.

    Read from ``/proc`` (Linux; NaN elsewhere). On a loaded machine the CPU a server spends
    per request is steadier than its requests/s, which depend on the CPU it was given.
    """
    tick = os.sysconf("SC_CLK_TCK")

    def stat(path: str) -> list[str]:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()

    try:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    children.setdefault(int(stat(f"/proc/{entry}/stat")[1]), []).append(int(entry))
        total, todo = 0.0, [pid]
        while todo:
            current = todo.pop()
            with contextlib.suppress(OSError):
                fields = stat(f"/proc/{current}/stat")
                total += (int(fields[11]) + int(fields[12])) / tick
            todo.extend(children.get(current, []))
        main = stat(f"/proc/{pid}/task/{pid}/stat")
        return total, (int(main[11]) + int(main[12])) / tick
    except OSError:
        return float("nan"), float("nan")


def settle(pid: int, *, idle_share: float = 0.03, step: float = 0.25, limit: float = 60.0) -> float:
    """Wait until the server at ``pid`` is idle (under ``idle_share`` of a core over ``step``
    seconds); return how long that took (at most ``limit``).

    A server that leaves work for later (read models behind the log) would otherwise look
    cheaper per request than one that keeps up: its CPU per request counts this tail too.
    """
    started = time.monotonic()
    last = cpu_seconds(pid)[0]
    while time.monotonic() - started < limit:
        time.sleep(step)
        now = cpu_seconds(pid)[0]
        if now - last < idle_share * step:
            return max(time.monotonic() - started - step, 0.0)
        last = now
    return limit


def stored_events(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


# -- the run ------------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, workdir: Path, use_wrk: bool) -> list[Load]:
    results: list[Load] = []
    kinds = ["bare", "bare-durable", "contexten", "contexten-ingest"]
    if args.granian:
        kinds += ["bare-granian", "contexten-granian"]
    for connections in (50, 1000):
        for kind in kinds:
            db = workdir / f"{kind}-{connections}.db"
            stores = kind == "bare-durable" or kind.startswith("contexten")
            extra = ["--db", str(db)] if stores else []
            with server(kind, args.impl, *extra) as (port, pid):
                before = cpu_seconds(pid)
                if use_wrk:
                    load = run_wrk(kind, port, connections, args.seconds, workdir)
                else:
                    load = asyncio.run(run_python(kind, port, connections, args.seconds))
                load.settle_s = settle(pid)
                after = cpu_seconds(pid)
            if load.requests:
                load.cpu_us = (after[0] - before[0]) / load.requests * 1e6
                load.loop_us = (after[1] - before[1]) / load.requests * 1e6
            results.append(load)
            stored = f", stored {stored_events(db)}" if stores else ""
            print(
                f"  {kind:17} c={connections:<5} {load.rate:8.0f} req/s  p50 {load.p50_ms:6.2f} ms"
                f"  p99 {load.p99_ms:7.2f} ms  cpu/req {load.cpu_us:5.0f} us "
                f"(main thread {load.loop_us:4.0f})  busy {load.settle_s:4.1f} s after  "
                f"errors {load.errors}{stored}",
                flush=True,
            )
    return results


def tracing_cost(args: argparse.Namespace, workdir: Path, use_wrk: bool) -> None:
    """Contexten at 50 connections with tracing off and on, alternating, two rounds each
    (with ``--tracing-before REF``, also on with the tracing module of git REF)."""
    before = args.tracing_before
    rates: dict[str, list[Load]] = {"off": [], **({"before": []} if before else {}), "on": []}
    for r in range(2):
        for mode in rates:
            db = workdir / f"trace-{mode}-{r}.db"
            extra = ["--db", str(db), *([] if mode == "off" else ["--trace"])]
            if mode == "before":
                extra += ["--trace-before", before]
            with server("contexten", args.impl, *extra) as (port, _):
                if use_wrk:
                    load = run_wrk("contexten", port, 50, args.seconds, workdir)
                else:
                    load = asyncio.run(run_python("contexten", port, 50, args.seconds))
            rates[mode].append(load)
            print(f"  tracing {mode:6} round {r + 1}: {load.rate:8.0f} req/s  "
                  f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms", flush=True)  # fmt: skip
    off = sum(x.rate for x in rates["off"]) / 2
    on = sum(x.rate for x in rates["on"]) / 2
    print(f"  mean: off {off:,.0f} req/s, on {on:,.0f} req/s: tracing keeps {on / off:.0%}")
    if before:
        was = sum(x.rate for x in rates["before"]) / 2
        print(f"  mean: on at {before} {was:,.0f} req/s: it kept {was / off:.0%}")


def latency(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float], int]:
    out = workdir / "latency.json"
    db = workdir / "latency.db"
    with server("contexten", args.impl, "--db", str(db), "--latency-out", str(out)) as (port, _):
        http_ms, errors = asyncio.run(run_steady(port, args.rate, args.seconds))
    handler_ms = [d * 1000 for d in json.loads(out.read_text())]
    return http_ms, handler_ms, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per run")
    parser.add_argument("--rate", type=float, default=500.0, help="latency run, requests/s")
    parser.add_argument("--impl", choices=["auto", "h11"], default="auto")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--granian", action="store_true", help="also run both servers on Granian (installed)"
    )
    parser.add_argument("--serve", choices=["bare", "contexten"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--no-dispatch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency-out", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace-before", help=argparse.SUPPRESS)
    parser.add_argument(
        "--tracing-before",
        metavar="REF",
        help="with --tracing-cost: also tracing on with the tracing module of git REF",
    )
    parser.add_argument(
        "--tracing-cost",
        action="store_true",
        help="only: contexten at 50 connections with tracing off and on (100%% sampled)",
    )
    args = parser.parse_args()
    if args.serve == "bare":
        return serve_bare(args.port, args.impl, args.db)
    if args.serve == "contexten":
        return serve_contexten(
            args.port,
            args.impl,
            args.db,
            args.latency_out,
            args.trace,
            args.trace_before,
            dispatch=not args.no_dispatch,
        )

    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    if args.generator == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
    if args.granian and not Path(sys.executable).with_name("granian").exists():
        sys.exit("--granian: granian is not installed (.venv/bin/pip install granian)")
    if not use_wrk:
        print("wrk not found (apt-get install -y wrk): using the Python raw-socket client, "
              "which may itself be the bottleneck")  # fmt: skip
    from importlib.util import find_spec

    fast = args.impl == "auto" and find_spec("uvloop") and find_spec("httptools")
    print(
        f"B3: {BODY_SIZE // 1024} KB signed GitHub push webhooks on loopback, "
        f"{args.seconds:g} s per run, uvicorn {'httptools+uvloop' if fast else 'h11+asyncio'}, "
        f"generator {'wrk' if use_wrk else 'python'}, {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="b3-") as tmp:
        workdir = Path(tmp)
        if args.tracing_cost:
            return tracing_cost(args, workdir, bool(use_wrk))
        results = throughput(args, workdir, bool(use_wrk))
        http_ms, handler_ms, errors = latency(args, workdir)

    print(f"\nsteady {args.rate:g} req/s for {args.seconds:g} s (contexten, one handler):")
    print(f"  HTTP answer      p50 {_pct(http_ms, 0.5):6.2f} ms  p99 {_pct(http_ms, 0.99):7.2f} ms"
          f"  ({len(http_ms)} answers, {errors} errors)")  # fmt: skip
    print(f"  request->handler p50 {_pct(handler_ms, 0.5):6.2f} ms  "
          f"p99 {_pct(handler_ms, 0.99):7.2f} ms  ({len(handler_ms)} handled)")  # fmt: skip

    print("\ntargets:")
    by = {(r.server, r.connections): r for r in results}
    for connections in (50, 1000):
        share = by["contexten", connections].rate / by["bare", connections].rate
        print(f"  c={connections:<5} contexten/bare throughput {share:6.1%}  (target >= 60%)")
        ingest = by["contexten-ingest", connections].rate / by["bare", connections].rate
        print(f"  c={connections:<5} contexten-ingest/bare throughput {ingest:6.1%}")
        durable = by["bare-durable", connections].rate / by["bare", connections].rate
        print(f"  c={connections:<5} bare-durable/bare throughput {durable:6.1%}  "
              "(the durable limit's own share)")  # fmt: skip
        for kind in ("contexten", "contexten-ingest"):
            of_durable = by[kind, connections].rate / by["bare-durable", connections].rate
            print(f"  c={connections:<5} {kind}/bare-durable throughput {of_durable:6.1%}")
        cpu_share = by["bare", connections].cpu_us / by["contexten", connections].cpu_us
        print(f"  c={connections:<5} bare/contexten server CPU per request {cpu_share:6.1%}")
        if args.granian:
            on_granian = by["contexten-granian", connections].rate / by["bare", connections].rate
            print(f"  c={connections:<5} contexten on granian / bare (uvicorn) {on_granian:6.1%}")
    print(f"  c=50    contexten p99 {by['contexten', 50].p99_ms:.2f} ms  (target < 25 ms)")
    print(f"  c=50    contexten-ingest p99 {by['contexten-ingest', 50].p99_ms:.2f} ms")
    print(
        f"  {args.rate:g}/s   request->handler p99 {_pct(handler_ms, 0.99):.2f} ms  "
        "(target < 25 ms)"
    )


if __name__ == "__main__":
    main()
