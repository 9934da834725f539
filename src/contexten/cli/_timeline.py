"""A live, readable timeline of an app's event log: one line per thing that happened.

::

    12:00:01.204  linear    ENG-1  ▶ Ada Lovelace labelled ENG-1 agent
    12:00:01.266  workflow  ENG-1  ● implement-issue:ENG-1 started
    12:00:01.301  linear    ENG-1  ◀ move_issue: ENG-1 → In Progress
    12:00:01.322  linear    ENG-1  ▶ Contexten moved ENG-1 to In Progress  · echo, not delivered

``▶`` is an event that came in (a webhook), ``◀`` an action the app took (a workflow step or
a handler's call), ``●`` the workflow engine (starts, waits, outcomes), ``↶`` a compensation.
The work item is the event's correlation id. Echoes, the webhooks our own actions caused,
are dimmed: the app did not deliver them to its handlers.

The timeline reads the store's global log, so it shows exactly what is durable, in commit
order, however the events got there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from rich.console import Console

from contexten.cli._common import markup
from contexten.events.envelope import Event
from contexten.exceptions import StoreClosed
from contexten.store.base import EventStore, RecordedEvent, is_system_stream

__all__ = ["Line", "Timeline", "describe"]

Line = tuple[str, str, str]
"""(source, work item, what happened): the first two plain stored text (the printer makes
them inert), the last rich markup in which every stored value was made inert
(:func:`~contexten.cli._common.markup`): no control characters, no markup of its own."""

_STYLES: Final[Mapping[str, str]] = {
    "linear": "magenta",
    "github": "white",
    "slack": "green",
    "codegen": "cyan",
    "workflow": "yellow",
}
_MAX_TEXT: Final = 70
_WORKFLOW_PREFIX: Final = "contexten.workflow."
_ACTION_PREFIX: Final = "contexten.action."


def _short(text: Any, limit: int = _MAX_TEXT) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _v(value: Any) -> str:
    """A stored value as inert text inside rich markup (no controls, no markup of its own)."""
    return markup("" if value is None else value)


def _q(text: Any) -> str:
    return f"“{_v(_short(text, 48))}”"


# -- incoming events -----------------------------------------------------------------------


def _linear(event: Event) -> str | None:
    data = event.data
    entity = data.get("data") or {}
    who = _v((data.get("actor") or {}).get("name") or "someone")
    ident = _v(entity.get("identifier") or (entity.get("issue") or {}).get("identifier") or "")
    kind = event.type.removeprefix("linear.")
    if kind == "issue.created":
        return f"{who} filed {ident} {_q(entity.get('title'))}"
    if kind == "issue.updated":
        changes = data.get("changes") or {}
        said = []
        if "labelIds" in changes:
            before = set((changes["labelIds"] or {}).get("from") or [])
            added = [
                str(lb.get("name"))
                for lb in entity.get("labels") or []
                if isinstance(lb, dict) and lb.get("id") not in before
            ]
            if added:
                said.append(f"labelled {ident} [bold]{_v(', '.join(added))}[/]")
        if "stateId" in changes:
            said.append(
                f"moved {ident} to [bold]{_v((entity.get('state') or {}).get('name', '?'))}[/]"
            )
        return f"{who} {' and '.join(said) or f'updated {ident}'}"
    if kind == "comment.created":
        return f"{who} commented on {ident}: {_q(entity.get('body'))}"
    return f"{who}: {_v(kind)}"


def _github(event: Event) -> str | None:
    data = event.data
    who = _v((data.get("sender") or {}).get("login") or "someone")
    kind = event.type.removeprefix("github.")
    pr = data.get("pull_request") or {}
    if kind == "pull_request.opened":
        draft = "draft " if pr.get("draft") else ""
        return f"{who} opened {draft}PR #{_v(pr.get('number'))} {_q(pr.get('title'))}"
    if kind == "pull_request.closed":
        done = "[bold]merged[/]" if pr.get("merged") else "closed"
        return f"{who} {done} PR #{_v(pr.get('number'))}"
    if kind == "issue_comment.created":
        issue = data.get("issue") or {}
        body = str((data.get("comment") or {}).get("body", "")).split("<!--")[0]
        return f"{who} commented on #{_v(issue.get('number'))}: {_q(body)}"
    return f"{who}: {_v(kind)}"


def _slack(event: Event) -> str | None:
    data = event.data
    kind = event.type.removeprefix("slack.")
    if kind == "block_actions":
        user = (data.get("user") or {}).get("username") or (data.get("user") or {}).get("id")
        pressed = [
            (a.get("text") or {}).get("text") or a.get("action_id")
            for a in data.get("actions") or []
            if isinstance(a, dict)
        ]
        return f"{_v(user)} pressed [bold]{_v(', '.join(map(str, pressed)))}[/]"
    inner = data.get("event") or {}
    who = "the app" if inner.get("bot_id") else inner.get("user", "someone")
    return f"{_v(who)} posted in {_v(inner.get('channel', '?'))}: {_q(inner.get('text'))}"


def _codegen(event: Event) -> str | None:
    data = event.data
    status = _v(event.type.rsplit(".", 1)[-1])
    line = f"agent run {_v(data.get('id'))} [bold]{status}[/]"
    if status == "failed" and data.get("result"):
        line += f": {_q(data['result'])}"
    if status == "completed":
        prs = data.get("github_pull_requests") or []
        if prs and isinstance(prs[0], dict):
            line += f", opened {_v(prs[0].get('url', ''))}"
    return line


_INCOMING: Final[Mapping[str, Callable[[Event], str | None]]] = {
    "linear": _linear,
    "github": _github,
    "slack": _slack,
    "codegen": _codegen,
}

# -- what the app did ----------------------------------------------------------------------


def _step_detail(name: str, result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    if name == "move_issue":
        return f"{_v(result.get('identifier'))} → {_v((result.get('state') or {}).get('name'))}"
    if name in ("create_pull_request",):
        draft = "draft " if result.get("draft") else ""
        return f"{draft}PR #{_v(result.get('number'))} {_q(result.get('title'))}"
    if name == "create_agent_run":
        return f"run {_v(result.get('id'))} {_v(result.get('status'))}"
    if name == "create_issue_comment":
        number = str(result.get("issue_url", "")).rsplit("/", 1)[-1]
        return f"linked on #{_v(number)}"
    if name == "close_pull_request":
        return f"PR #{_v(result.get('number'))} closed"
    if name in ("post_message", "request_approval"):
        text = (result.get("message") or {}).get("text")
        buttons = " (Approve / Reject buttons)" if name == "request_approval" else ""
        return f"in {_v(result.get('channel'))}{buttons}: {_q(text)}"
    if name == "update_message":
        return f"{_q(result.get('text'))}"
    if name == "merge_pull_request":
        return f"merged ({_v(str(result.get('sha') or '')[:7])})"
    return ""


class _Describer:
    """Turns stored events into timeline lines, remembering what it needs across events."""

    def __init__(self) -> None:
        self.work_items: dict[str, str] = {}  # workflow id -> correlation id
        self.platforms: dict[tuple[str, int], str] = {}  # (workflow, seq) -> action platform

    def line(self, rec: RecordedEvent, echo: bool) -> Line | None:
        event = rec.event
        source = event.type.split(".", 1)[0]
        if source in _INCOMING:
            text = _INCOMING[source](event)
            if text is None:
                return None
            if echo:
                return (
                    source,
                    event.correlation_id or "",
                    f"[dim]▶ {text}  · echo, not delivered[/]",
                )
            return source, event.correlation_id or "", f"▶ {text}"
        if event.type.startswith(_ACTION_PREFIX):
            return self._action(event)
        if event.type.startswith(_WORKFLOW_PREFIX):
            return self._workflow(rec)
        return None

    def _action(self, event: Event) -> Line | None:
        data = event.data
        platform = str(data.get("platform"))
        action = str(data.get("action"))
        wid = data.get("workflow_id")
        if isinstance(wid, str) and not action.endswith(".undo"):
            self.platforms[(wid, int(data.get("seq", 0)))] = platform
            return None  # the step's line says it, with the platform's answer
        if isinstance(wid, str):
            base = action.removesuffix(".undo")
            summary = data.get("result") or {}
            number = summary.get("number")
            target = summary.get("identifier") or (f"#{number}" if number else summary.get("id"))
            undo = f"↶ undo {_v(base)} {_v(target or '')}".rstrip()
            return platform, event.correlation_id or "", undo
        return platform, event.correlation_id or "", f"◀ {_v(action)}"

    def _workflow(self, rec: RecordedEvent) -> Line | None:
        event = rec.event
        kind = event.type.removeprefix(_WORKFLOW_PREFIX)
        data = event.data
        wid = str(data.get("workflow_id") or event.subject or "")
        if not is_system_stream(rec.stream):  # the public outcome event
            if kind not in ("completed", "failed", "compensated", "cancelled"):
                return None
            style = "bold green" if kind == "completed" else "bold red"
            detail = data.get("result") if kind == "completed" else (data.get("error") or {})
            if isinstance(detail, dict):
                detail = detail.get("message") or ", ".join(f"{k}={v}" for k, v in detail.items())
            text = f"● {_v(wid)} [{style}]{kind}[/] {_v(_short(detail, 60))}"
            return "workflow", event.correlation_id or "", text
        item = self.work_items.get(wid, "")
        if kind == "started":
            inputs = data.get("input")
            if isinstance(inputs, dict):
                item = self.work_items[wid] = str(inputs.get("correlation_id") or "")
            return "workflow", item, f"● {_v(wid)} started"
        if kind == "step_completed":
            name = str(data.get("name"))
            platform = self.platforms.pop((wid, int(data.get("seq", 0))), "workflow")
            detail = _step_detail(name, data.get("result"))
            return platform, item, f"◀ {_v(name)}: {detail}" if detail else f"◀ {_v(name)}"
        if kind == "step_failed":
            error = (data.get("error") or {}).get("message")
            return "workflow", item, f"[red]✗ step {_v(data.get('name'))} failed: {_q(error)}[/]"
        if kind == "wait_started":
            return "workflow", item, f"● waiting for {_v(data.get('pattern'))}"
        if kind == "wait_timed_out":
            return "workflow", item, "[red]● wait timed out[/]"
        if kind == "compensation_started":
            return "workflow", item, "[yellow]● compensating: undoing the completed steps[/]"
        if kind == "compensation_step_failed":
            return "workflow", item, f"[red]✗ could not undo {_v(data.get('name'))}[/]"
        return None


def describe(rec: RecordedEvent, *, echo: bool = False) -> Line | None:
    """The timeline line for one stored event (None: not shown), without history."""
    return _Describer().line(rec, echo)


class Timeline:
    """Prints an app's event log as it grows; see the module docstring.

    Args:
        store: the store to read.
        console: where to print.
        is_echo: tells echoes apart (``app.is_echo``).
        after: the log position to start after.
    """

    def __init__(
        self,
        store: EventStore,
        console: Console,
        *,
        is_echo: Callable[[Event], bool] = lambda event: False,
        after: int = 0,
    ) -> None:
        self.store = store
        self.console = console
        self.is_echo = is_echo
        self.position = after
        self.lines = 0
        self._describer = _Describer()

    def _print(self, rec: RecordedEvent) -> None:
        line = self._describer.line(rec, self.is_echo(rec.event))
        if line is None:
            return
        source, item, text = line
        when = datetime.fromtimestamp(rec.event.time.timestamp()).strftime("%H:%M:%S.%f")[:-3]
        style = _STYLES.get(source, "white")
        self.console.print(
            f"[dim]{when}[/]  [{style}]{_v(source):<8}[/]  [bold]{_v(item):<6}[/]  {text}",
            soft_wrap=True,
            emoji=False,  # a stored ":skull:" prints as itself
        )
        self.lines += 1

    async def catch_up(self) -> None:
        """Print everything stored so far."""
        while batch := await self.store.read_all(after=self.position, limit=500):
            for rec in batch:
                self._print(rec)
                self.position = rec.position

    async def follow(self) -> None:
        """Print the log as it grows, until cancelled or the store is closed."""
        try:
            while True:
                await self.catch_up()
                with contextlib.suppress(TimeoutError):
                    await self.store.wait_for_new(self.position, timeout=1.0)
        except StoreClosed:
            return  # the app stopped (Ctrl-C)
