"""Quickstart: handlers, follow-up events, retries and the dead-letter queue on SQLite.

Run it with ``make run`` (or ``.venv/bin/python examples/quickstart.py``). It stores every
event in ``contexten.db`` (or ``CONTEXTEN_STORE_URL``), so run it twice and the second run
finds the first run's events and dead letters still there; inspect them with
``.venv/bin/contexten events list`` and ``.venv/bin/contexten dlq list``.
"""

from __future__ import annotations

import asyncio

from contexten import App, Event, HandlerContext, NonRetryableError, RetryPolicy

app = App()  # the store comes from CONTEXTEN_STORE_URL, else sqlite:///contexten.db


@app.on("github.pull_request.opened", name="triage")
async def triage(event: Event, ctx: HandlerContext) -> None:
    """Label every new pull request, and say so with a follow-up event."""
    title = event.data["pull_request"]["title"]
    label = "docs" if "docs" in title.lower() else "needs-review"
    print(f"[triage]  {event.subject}: {title!r} -> label {label!r}")
    await ctx.emit("contexten.triage.completed", {"label": label})


@app.on("contexten.triage.completed", name="report")
async def report(event: Event, ctx: HandlerContext) -> None:
    """React to our own follow-up event; it carries the PR's correlation id."""
    print(
        f"[report]  {event.subject} labelled {event.data['label']!r} "
        f"(correlation {event.correlation_id}, caused by {event.causation_id})"
    )


@app.on(
    "github.push",
    name="deploy",
    retry=RetryPolicy(initial_interval=0.05, maximum_attempts=3, jitter=0),
)
async def deploy(event: Event, ctx: HandlerContext) -> None:
    """Pretend to deploy; pushes to 'broken' fail every time and end in the dead-letter queue."""
    ref = event.data["ref"]
    if ref.endswith("/broken"):
        print(f"[deploy]  attempt {ctx.attempt} for {ref}: deploy target unreachable")
        raise ConnectionError("deploy target unreachable")
    if ref.endswith("/forbidden"):
        raise NonRetryableError("deploys from this branch are not allowed")
    print(f"[deploy]  {ref} deployed")


async def main() -> None:
    """Publish a few events, let the handlers run, then show what was stored."""
    async with app:
        await app.publish(
            Event(
                type="github.pull_request.opened",
                source="github",
                subject="acme/api#42",
                correlation_id="ENG-42",
                data={"pull_request": {"title": "Add rate limiting (ENG-42)"}},
            )
        )
        for ref in ("refs/heads/main", "refs/heads/broken", "refs/heads/forbidden"):
            await app.publish(
                Event(type="github.push", source="github", subject="acme/api", data={"ref": ref})
            )
        await app.drain(timeout=30)

        letters = await app.dead_letters.list()
        print(f"\n{len(letters)} dead letter(s) parked so far:")
        for letter in letters:
            print(
                f"  {letter.id}  {letter.subscription}: {letter.error_type}: "
                f"{letter.error_message} (attempts={letter.attempts})"
            )
        health = await app.health()
        print(f"\nhealthy: {health.ok}; store: {app.store.url}")
        print("try: .venv/bin/contexten events list   and   .venv/bin/contexten dlq list")


if __name__ == "__main__":
    asyncio.run(main())
