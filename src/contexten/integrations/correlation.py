"""Work-item keys: what ties a Linear issue, its branch and PR, its Slack thread and its agent run.

An event's ``correlation_id`` names the piece of work it belongs to, so a workflow waiting for
"the pull request of ENG-123" finds it whichever platform it comes from. The webhook modules
decide *where* to look in each payload (branch names first, then titles, bodies and commit
messages); this module knows *what* a key looks like and how it is written:

=====================  =====================================  =============================
key                    found in                               written as
=====================  =====================================  =============================
Linear identifier      branch names, titles, bodies, commits  ``ENG-123`` (upper case)
Codegen agent run      run links and ``agent run`` mentions   ``agent_run/<id>``
Slack thread           a message's ``thread_ts`` (else ts)    ``slack:<channel>:<ts>``
=====================  =====================================  =============================

A Linear identifier wins over an agent run, which wins over a Slack thread: it is the key
the other platforms mention.

Without configured team keys, identifiers are recognised by shape, which has false positives
(``UTF-8`` in a title reads like one); common ones are excluded, and lower-case keys count
only at the start of a branch name's segment, the way Linear names branches
(``alice/eng-123-fix-login``). Configure the real team keys (``team_keys``, or
``CONTEXTEN_LINEAR_TEAM_KEYS`` for the ingress) and only those match, in any case.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Final

__all__ = [
    "NOT_TEAM_KEYS",
    "agent_run_ids",
    "agent_run_key",
    "branch_identifiers",
    "find_work_item",
    "linear_identifiers",
    "slack_thread_key",
]

# Prefixes that look like team keys in prose and branch names but never are.
NOT_TEAM_KEYS: Final = frozenset(
    {
        "AES", "ANSI", "ARM", "BASE", "BUMP", "BUILD", "CHORE", "CP", "CVE", "DEPS", "DOCS",
        "ECMA", "ES", "FEAT", "FEATURE", "FIX", "GHSA", "GMT", "HOTFIX", "HTTP", "IEEE",
        "IPV", "ISO", "ISSUE", "MD", "PATCH", "PEP", "PR", "REFACTOR", "RELEASE", "REVERT",
        "RFC", "RSA", "SHA", "SSL", "STEP", "TEST", "TLS", "TMP", "UPDATE", "UTC", "UTF",
        "WIN", "WIP",
    }
)  # fmt: skip

_MAX_TEXT: Final = 100_000  # characters of one text searched (bodies can be huge)
_TEXT_ID: Final = re.compile(
    r"(?<![A-Za-z0-9_\-])([A-Z][A-Z0-9]{1,9})-([1-9][0-9]{0,8})(?![0-9A-Za-z_])"
)
_ANY_CASE_ID: Final = re.compile(
    r"(?<![A-Za-z0-9_\-])([A-Za-z][A-Za-z0-9]{1,9})-([1-9][0-9]{0,8})(?![0-9A-Za-z_])"
)
# In a branch, "-" and "_" separate words: "feat-eng-123-login".
_BRANCH_ANY_CASE_ID: Final = re.compile(
    r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]{1,9})-([1-9][0-9]{0,8})(?![0-9A-Za-z])"
)
# Linear's branch format: the identifier starts a path segment ("alice/eng-123-title").
_BRANCH_SEGMENT_ID: Final = re.compile(r"(?:^|/)([a-z]{2,10})-([1-9][0-9]{0,8})(?=$|[-_/])")
_AGENT_RUN: Final = re.compile(
    r"codegen\.com/agent/trace/([0-9]{1,18})\b"
    r"|\bagent[ _-]?run(?:[ _-]?id)?[ #:=/]*([0-9]{1,18})\b",
    re.IGNORECASE,
)


def _normalise_keys(team_keys: Collection[str] | None) -> frozenset[str] | None:
    if not team_keys:
        return None
    return frozenset(k.strip().upper() for k in team_keys if k.strip())


def linear_identifiers(text: str | None, *, team_keys: Collection[str] | None = None) -> list[str]:
    """Linear identifiers mentioned in prose (a title, a body, a commit message), in order.

    Without ``team_keys`` only upper-case identifiers count (``ENG-123``, not ``eng-123``),
    minus :data:`NOT_TEAM_KEYS`; with them, exactly those teams' identifiers, in any case.
    """
    if not text:
        return []
    keys = _normalise_keys(team_keys)
    return _scan(text[:_MAX_TEXT], _TEXT_ID if keys is None else _ANY_CASE_ID, keys)


def _scan(text: str, pattern: re.Pattern[str], keys: frozenset[str] | None) -> list[str]:
    found: list[str] = []
    for match in pattern.finditer(text):
        team = match.group(1).upper()
        if (team in keys) if keys is not None else (team not in NOT_TEAM_KEYS):
            ident = f"{team}-{match.group(2)}"
            if ident not in found:
                found.append(ident)
    return found


def branch_identifiers(
    branch: str | None, *, team_keys: Collection[str] | None = None
) -> list[str]:
    """Linear identifiers in a branch name (``refs/heads/`` is ignored), in order.

    Branch names are mostly lower case, so lower-case identifiers count here, but (without
    ``team_keys``) only where Linear puts them: at the start of a path segment.
    """
    if not branch:
        return []
    branch = branch.removeprefix("refs/heads/")[:_MAX_TEXT]
    keys = _normalise_keys(team_keys)
    if keys is not None:
        return _scan(branch, _BRANCH_ANY_CASE_ID, keys)
    found = _scan(branch, _TEXT_ID, None)
    for match in _BRANCH_SEGMENT_ID.finditer(branch):
        team = match.group(1).upper()
        ident = f"{team}-{match.group(2)}"
        if team not in NOT_TEAM_KEYS and ident not in found:
            found.append(ident)
    return found


def agent_run_ids(text: str | None) -> list[str]:
    """Codegen agent-run ids mentioned in ``text`` (run links, "agent run 123"), in order."""
    if not text:
        return []
    found: list[str] = []
    for match in _AGENT_RUN.finditer(text[:_MAX_TEXT]):
        run_id = match.group(1) or match.group(2)
        if run_id not in found:
            found.append(run_id)
    return found


def agent_run_key(run_id: str | int) -> str:
    """The correlation key of an agent run (the same as its events' subject)."""
    return f"agent_run/{run_id}"


def slack_thread_key(channel: str, thread_ts: str) -> str:
    """The correlation key of a Slack thread."""
    return f"slack:{channel}:{thread_ts}"


def find_work_item(
    *,
    branches: Iterable[str | None] = (),
    texts: Iterable[str | None] = (),
    team_keys: Collection[str] | None = None,
) -> str | None:
    """The work-item key of an object: a Linear identifier, else an agent run.

    ``branches`` are searched first (the most deliberate mention), then ``texts`` in the order
    given (titles before bodies before commit messages); the first Linear identifier wins. An
    agent-run mention in the texts is the fallback.

    The result is the first element of what :func:`branch_identifiers`,
    :func:`linear_identifiers` and :func:`agent_run_ids` return, but found without their
    lists: the team keys are normalised once, empty candidates are skipped, and each search
    stops at its first identifier (this runs on every webhook).
    """
    keys = _normalise_keys(team_keys)
    for branch in branches:
        if branch and (found := _first_in_branch(branch, keys)):
            return found
    seen: list[str] = []  # texts is consumed once: the fallback re-reads this copy
    for text in texts:
        if not text:
            continue
        if found := _first_in_text(text, keys):
            return found
        seen.append(text)
    for text in seen:
        if match := _AGENT_RUN.search(text[:_MAX_TEXT]):
            return agent_run_key(match.group(1) or match.group(2))
    return None


def _first(text: str, pattern: re.Pattern[str], keys: frozenset[str] | None) -> str | None:
    """The first identifier :func:`_scan` would list, without scanning further."""
    for match in pattern.finditer(text):
        team = match.group(1).upper()
        if (team in keys) if keys is not None else (team not in NOT_TEAM_KEYS):
            return f"{team}-{match.group(2)}"
    return None


def _first_in_text(text: str, keys: frozenset[str] | None) -> str | None:
    """``linear_identifiers(text)[0]`` (None when empty), for already normalised ``keys``."""
    text = text[:_MAX_TEXT]
    if "-" not in text:  # every identifier pattern needs a "-": nothing to find
        return None
    return _first(text, _TEXT_ID if keys is None else _ANY_CASE_ID, keys)


def _first_in_branch(branch: str, keys: frozenset[str] | None) -> str | None:
    """``branch_identifiers(branch)[0]`` (None when empty), for already normalised ``keys``."""
    branch = branch.removeprefix("refs/heads/")[:_MAX_TEXT]
    if "-" not in branch:
        return None
    if keys is not None:
        return _first(branch, _BRANCH_ANY_CASE_ID, keys)
    found = _first(branch, _TEXT_ID, None)
    if found is not None:
        return found
    for match in _BRANCH_SEGMENT_ID.finditer(branch):
        team = match.group(1).upper()
        if team not in NOT_TEAM_KEYS:
            return f"{team}-{match.group(2)}"
    return None
