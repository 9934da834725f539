"""``contexten store``: operator maintenance of the event store (bounded growth).

``contexten store prune`` applies a retention policy (:mod:`contexten.store.retention`): it
drops dedup keys older than the window and the data of old events matching a rule, keeping
their envelopes, never in system streams nor in the streams of open dead letters. It is a
dry run unless ``--apply`` is given: the first run shows what would go. An applied run is
recorded as an operator's audit event (``contexten.audit.store.prune``).
"""

from __future__ import annotations

import click

from contexten.cli._common import audit, clean, echo_json, fail, run_async, store_option, with_store
from contexten.exceptions import ConfigurationError
from contexten.projections.read_side import open_read_side
from contexten.store import EventStore
from contexten.store.retention import (
    PruneReport,
    RetentionPolicy,
    RetentionRule,
    parse_age,
    prune,
)

__all__ = ["store"]


@click.group()
def store() -> None:
    """Maintain the event store: bound its growth."""


def _policy(
    app_ref: str | None, rules: tuple[str, ...], window: str | None
) -> tuple[RetentionPolicy, str | None]:
    """The policy (the app's, then the options over it) and the app's store URL."""
    base, url = RetentionPolicy(), None
    if app_ref:
        from contexten.ingress.loader import load_app

        app = load_app(app_ref)
        base, url = app.retention_policy, app.store.url
    policy = RetentionPolicy(
        dedup_window=parse_age(window) if window else base.dedup_window,
        rules=tuple(RetentionRule.parse(r) for r in rules) if rules else base.rules,
    )
    return policy, url


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1_048_576:.2f} MiB ({n} bytes)"


def _print(report: PruneReport, policy: RetentionPolicy) -> None:
    verb = "would drop" if report.dry_run else "dropped"
    click.echo(f"dedup keys older than {policy.dedup_window}: {verb} {report.dedup_keys}")
    for rule in policy.rules:
        n = report.events.get(rule.pattern, 0)
        click.echo(f"data of {clean(rule.pattern)} events older than {rule.after}: {verb} {n}")
    click.echo(f"event data bytes {verb}: {report.data_bytes}")
    click.echo(f"kept for open dead letters: {report.protected}")
    click.echo(f"store size: {_size(report.size_before)} -> {_size(report.size_after)}")
    if report.dry_run:
        click.echo("dry run: nothing was changed; add --apply to prune")


@store.command("prune")
@store_option
@click.option(
    "--app",
    "app_ref",
    default=None,
    help="Use this app's app.retention(...) policy (and its store, unless --store).",
)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    metavar="PATTERN=AGE",
    help="Drop the data of events matching PATTERN older than AGE (github.**=90d); "
    "repeatable; replaces the app's rules.",
)
@click.option(
    "--dedup-window",
    default=None,
    metavar="AGE",
    help="Drop dedup keys older than this (default 7d, or the app's).",
)
@click.option("--apply", "apply_", is_flag=True, help="Prune (without it: a dry run).")
@click.option(
    "--vacuum",
    is_flag=True,
    help="After pruning, give the space back to the file system (SQLite VACUUM, "
    "PostgreSQL VACUUM FULL: rewrites the tables, writers wait meanwhile).",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@run_async
async def prune_command(
    store_url: str | None,
    app_ref: str | None,
    rules: tuple[str, ...],
    dedup_window: str | None,
    apply_: bool,
    vacuum: bool,
    as_json: bool,
) -> None:
    """Drop old dedup keys and the data of old events (dry run unless --apply)."""
    if vacuum and not apply_:
        fail("--vacuum needs --apply")
    try:
        policy, app_store = _policy(app_ref, rules, dedup_window)
    except ConfigurationError as e:
        fail(str(e))

    async def body(es: EventStore) -> PruneReport:
        async with open_read_side(es) as read:
            report = await prune(
                es,
                policy,
                protected=read.retention_protected,
                dry_run=not apply_,
                reclaim=vacuum,
            )
        if apply_:
            detail = ", ".join(f"{r.pattern}={r.after}" for r in policy.rules)
            await audit(
                es,
                "store:prune",
                target="store",
                outcome=report.summary(),
                detail=f"dedup window {policy.dedup_window}; rules: {detail or 'none'}",
            )
        return report

    report = await with_store(store_url or app_store, body)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report, policy)
