"""A faithful local sandbox of the GitHub, Linear, Slack and Codegen APIs.

Tests and demos run against it with no accounts and no network::

    sandbox = Sandbox()
    async with sandbox, sandbox.clients() as clients:
        comment = await clients.get(GitHubClient).create_issue_comment("acme/api", 1, "hi")

Serve it for a running app with ``python -m contexten.testing.sandbox --port 8900
--webhook-url http://127.0.0.1:8000/webhooks`` and ``CONTEXTEN_SANDBOX_URL=http://127.0.0.1:8900``.
"""

from contexten.testing.sandbox.app import SANDBOX_TOKEN, Sandbox, SandboxTransport
from contexten.testing.sandbox.core import SandboxConfig
from contexten.testing.sandbox.faults import Fault, FaultInjector, SandboxConnectionReset
from contexten.testing.sandbox.webhooks import Delivery, sign_github, sign_linear, sign_slack

__all__ = [
    "SANDBOX_TOKEN",
    "Delivery",
    "Fault",
    "FaultInjector",
    "Sandbox",
    "SandboxConfig",
    "SandboxConnectionReset",
    "SandboxTransport",
    "sign_github",
    "sign_linear",
    "sign_slack",
]
