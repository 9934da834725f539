"""``contexten replay check``: replay stored workflow histories against new code before a
deploy, and fail (exit 1) when an open instance would break. ``contexten replay shadow``:
re-feed recorded webhooks into new code, isolated, and say what it would do differently.

Run it in CI against a copy (or a read replica) of production's store::

    contexten replay check --app new_version.py:app --store postgresql://... --since 7d

Nothing is written to the store and no workflow code runs for real: histories are replayed
with every durable call answered from the record.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from contexten.cli._common import echo_json, fail, run_async
from contexten.ingress.loader import load_app
from contexten.store import create_store, store_url_from_env
from contexten.testing.shadow import load_reference, shadow_replay
from contexten.workflows.replay_check import ReplayReport, check_replays

__all__ = ["parse_since", "replay"]

_STORE_ENV = "CONTEXTEN_STORE_URL"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+)([smhdw])$")


def parse_since(value: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w``, ``90s`` before ``now``, or an ISO-8601 time.

    Raises:
        click.BadParameter: neither.
    """
    match = _DURATION.match(value.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (7d, 12h, 30m) nor an ISO-8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.group()
def replay() -> None:
    """Replay workflow histories against new code."""


@replay.command("check")
@click.option("--app", "reference", required=True, help="The new App: module:attr or file.py:attr.")
@click.option(
    "--store",
    "store_url",
    default=None,
    help="The store whose histories to check (default: CONTEXTEN_STORE_URL, else the App's).",
)
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Also check instances closed in this window (7d, 12h, an ISO time, or 'all').",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@run_async
async def check(reference: str, store_url: str | None, since: str, as_json: bool) -> None:
    """Replay every open instance (and those closed since --since) against --app's code.

    Exits 1 when an open instance would diverge (deploying would block it), 0 otherwise;
    divergences of closed instances are reported but do not fail the check.
    """
    app = load_app(reference, cwd=Path.cwd())
    closed_since = None if since == "all" else parse_since(since, datetime.now(UTC))
    url = store_url or (store_url_from_env() if _STORE_ENV in os.environ else app.store.url)
    store = create_store(url)
    await store.open()
    console = Console(stderr=True)
    try:
        if as_json or not console.is_terminal:
            report = await check_replays(store, app.workflows, closed_since=closed_since)
        else:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("replaying histories", total=None)
                report = await check_replays(
                    store,
                    app.workflows,
                    closed_since=closed_since,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    finally:
        await store.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report)
    if not report.ok:
        fail(f"{len(report.breaking)} open instance(s) would break with this code")


def _print(report: ReplayReport) -> None:
    console = Console()
    if not console.is_terminal:  # CI logs: no wrapping of ids and step names
        console = Console(width=200)
    if report.divergences:
        table = Table(title="Divergences")
        columns = ("instance", "version", "status", "call", "first event", "expected", "produced")
        for column in columns:
            table.add_column(column)
        for d in report.divergences:
            table.add_row(
                d.workflow_id,
                d.version,
                d.status + (" (open: breaks)" if d.open else ""),
                str(d.seq or "-"),
                (d.event_type or "-").removeprefix("contexten.workflow.")
                + (f" (v{d.event_version})" if d.event_version else ""),
                d.expected or "-",
                d.produced or d.reason,
            )
        console.print(table)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    console.print(
        f"checked {report.checked} histories ({report.open_checked} open), "
        f"{len(report.divergences)} divergence(s), {len(report.breaking)} breaking; "
        f"skipped: {skipped}"
    )


@replay.command("shadow")
@click.option("--app", "reference", required=True, help="The new App: module:attr or file.py:attr.")
@click.option(
    "--store",
    "store_url",
    default=None,
    help="The store that recorded the webhooks (default: CONTEXTEN_STORE_URL).",
)
@click.option("--from", "start", required=True, help="Window start: ISO time or 7d, 12h ago.")
@click.option("--to", "end", default=None, help="Window end: ISO time or ago (default: now).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@run_async
async def shadow(
    reference: str, store_url: str | None, start: str, end: str | None, as_json: bool
) -> None:
    """Re-feed the webhooks recorded in a window into --app, isolated (memory store,
    virtual clock, the sandbox for every platform call, no credentials), and report what it
    would do differently: workflows, actions, dead letters, per work item.

    Exits 0 whatever it finds (differences are for a person to judge); 1 on errors.
    """
    now = datetime.now(UTC)
    first, last = parse_since(start, now), parse_since(end, now) if end else now
    store = create_store(store_url or store_url_from_env())
    await store.open()
    console = Console(stderr=True)
    try:
        if as_json or not console.is_terminal:
            report = await shadow_replay(store, load_reference(reference), first, last)
        else:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("re-feeding webhooks", total=None)
                report = await shadow_replay(
                    store,
                    load_reference(reference),
                    first,
                    last,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    finally:
        await store.close()
    if as_json:
        echo_json(report.to_dict())
        return
    out = Console() if Console().is_terminal else Console(width=200)
    if report.differences:
        table = Table(title="What the new code would do differently")
        for column in ("kind", "what", "work item", "recorded", "new code"):
            table.add_column(column)
        for d in report.differences:
            table.add_row(d.kind, d.name, d.work_item, str(d.recorded), str(d.shadow))
        out.print(table)
    out.print(
        f"re-fed {report.webhooks} webhooks ({report.echoes_skipped} echoes skipped): "
        f"{len(report.differences)} difference(s)"
    )
