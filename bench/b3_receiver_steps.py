"""B3's receiver, step by step: us per call of each step of ``receive_github``, in-process.

What ``contexten serve`` does per GitHub webhook before the commit, over two sets of bodies:

* **push**: B3's signed ~5 KB ``push`` body (``b3_ingress.push_payload``);
* **corpus**: the 500 real GitHub examples of the shared fixtures (``../shared/fixtures/
  github-webhooks`` beside the repository, as the tests find them), us per call averaged
  over all of them.

Steps: the whole receiver; signature check; ``loads_object`` (and its two parts, msgspec's
decode and the limits walk); ``normalise`` (and its event type, subject and correlation id);
the dedup key. Each number is the median of ``--rounds`` timed rounds. No server, no store,
no event loop: for the interpreter work of the receiver only (B3 measures the rest).

Before/after a change: run it against another checkout's sources in alternation, e.g.
``PYTHONPATH=<other checkout>/src .venv/bin/python bench/b3_receiver_steps.py``.

Run: ``.venv/bin/python bench/b3_receiver_steps.py [--rounds 7] [--json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from b3_ingress import SECRET, push_payload

from contexten.ingress import jsonsafe
from contexten.ingress.config import IngressConfig
from contexten.ingress.receivers import receive_github
from contexten.integrations.github import webhooks as gh

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "github-webhooks"

# (event name, body, delivery id, headers, parsed payload)
Delivery = tuple[str, bytes, str, dict[str, str], dict[str, Any]]


def deliveries(bodies: list[tuple[str, bytes]]) -> list[Delivery]:
    out: list[Delivery] = []
    for i, (event_name, body) in enumerate(bodies):
        delivery = f"d-{i}"
        headers = {
            "x-hub-signature-256": gh.sign(SECRET, body),
            "x-github-event": event_name,
            "x-github-delivery": delivery,
            "content-type": "application/json",
        }
        out.append((event_name, body, delivery, headers, json.loads(body)))
    return out


def steps(config: IngressConfig) -> dict[str, Callable[[Delivery], object]]:
    now = config.clock.now()
    secrets = config.github_secrets
    keys = config.team_keys
    decoder = msgspec.json.Decoder()
    return {
        "receive_github": lambda d: receive_github(d[3], d[1], config),
        "verify": lambda d: gh.verify(d[1], d[3]["x-hub-signature-256"], secrets),
        "loads_object": lambda d: jsonsafe.loads_object(d[1]),
        "  msgspec decode": lambda d: decoder.decode(d[1]),
        "  check_limits": lambda d: jsonsafe.check_limits(d[4]),
        "normalise": lambda d: gh.normalise(d[0], d[4], delivery_id=d[2], time=now, team_keys=keys),
        "  event_type": lambda d: gh.event_type(d[0], d[4]),
        "  subject": lambda d: gh.subject(d[0], d[4]),
        "  correlation_id": lambda d: gh.correlation_id(d[0], d[4], team_keys=keys),
        "dedup_key": lambda d: gh.dedup_key(d[0], d[2], d[4]),
    }


def measure(step: Callable[[Delivery], object], items: list[Delivery], rounds: int) -> float:
    """Median over ``rounds`` of us per call (each round ~0.1 s or more)."""
    repeat = max(1, 2000 // len(items))
    samples = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter_ns()
        for _ in range(repeat):
            for item in items:
                step(item)
        samples.append((time.perf_counter_ns() - started) / repeat / len(items) / 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    files = sorted(FIXTURES.glob("*/*/*.json"))
    if not files:
        sys.exit(f"no GitHub examples under {FIXTURES}")
    config = IngressConfig.from_env({"CONTEXTEN_GITHUB_WEBHOOK_SECRET": SECRET})
    sets = {
        "push": deliveries([("push", json.dumps(push_payload()).encode())]),
        "corpus": deliveries(
            [(p.parent.name, json.dumps(json.loads(p.read_bytes())).encode()) for p in files]
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for name, step in steps(config).items():
        results[name] = {label: measure(step, items, args.rounds) for label, items in sets.items()}
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'us per call (median)':24} {'push':>8} {'corpus':>8}")
    for name, row in results.items():
        print(f"{name:24} {row['push']:8.2f} {row['corpus']:8.2f}")


if __name__ == "__main__":
    main()
