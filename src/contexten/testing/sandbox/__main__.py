"""Serve the sandbox: ``python -m contexten.testing.sandbox [--port 8900] [--webhook-url URL]``.

Webhook secrets come from the same variables the ingress reads
(``CONTEXTEN_GITHUB_WEBHOOK_SECRET``, ``CONTEXTEN_LINEAR_WEBHOOK_SECRET``,
``CONTEXTEN_SLACK_SIGNING_SECRET``; the first of a
comma-separated pair), so both sides agree without extra set-up.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from contexten.testing.sandbox.app import Sandbox
from contexten.testing.sandbox.core import DEFAULT_SECRETS, SandboxConfig

_SECRET_ENV = {
    "github": "CONTEXTEN_GITHUB_WEBHOOK_SECRET",
    "linear": "CONTEXTEN_LINEAR_WEBHOOK_SECRET",
    "slack": "CONTEXTEN_SLACK_SIGNING_SECRET",
}


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m contexten.testing.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get("CONTEXTEN_SANDBOX_WEBHOOK_URL"),
        help="base URL webhooks are posted to (<url>/github, /linear, ...)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds of latency injected into every API call"
    )
    parser.add_argument(
        "--run-duration",
        type=float,
        default=2.0,
        help="seconds an agent run works before it finishes",
    )
    args = parser.parse_args(argv)
    secrets = {
        platform: (os.environ.get(env) or DEFAULT_SECRETS[platform]).split(",")[0].strip()
        for platform, env in _SECRET_ENV.items()
    }
    sandbox = Sandbox(
        SandboxConfig(
            webhook_url=args.webhook_url, secrets=secrets, agent_run_duration=args.run_duration
        )
    )
    if args.latency > 0:
        sandbox.inject("latency", latency=args.latency, times=None)
    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
