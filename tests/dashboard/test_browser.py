"""The dashboard in a real headless Chromium, driven by Playwright, as a person uses it.

Debian's ``chromium`` is used (``executable_path``): Playwright's own browser download
cannot work offline. Without it (or without the ``playwright`` package) these tests skip
and say how to install it, except under ``CONTEXTEN_REQUIRE_SERVICES=1`` (CI), where they
fail. Screenshots go to ``CONTEXTEN_SCREENSHOT_DIR`` when set (the README's come from
there), else into the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from contexten import Event
from contexten.bus.dead_letters import DeadLetterStatus
from contexten.security import AUDIT_STREAM_PREFIX

from ._support import (
    HANG_GUARD,
    Served,
    leave_an_old_version,
    populate,
    serve_dashboard,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

REQUIRE_SERVICES = os.environ.get("CONTEXTEN_REQUIRE_SERVICES") == "1"
CHROMIUM = os.environ.get("CONTEXTEN_CHROMIUM", "/usr/bin/chromium")
INSTALL = "apt-get install -y chromium && pip install playwright (the dev extra)"
REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_MS = HANG_GUARD * 1000


def _executable() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def _need_browser() -> None:
    reason = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        reason = f"the playwright package is not installed ({INSTALL})"
    if reason is None and _executable() is None:
        reason = f"Debian's chromium is not installed at {CHROMIUM} ({INSTALL})"
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (CONTEXTEN_REQUIRE_SERVICES=1)")
        pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _need_browser()
    from playwright.async_api import async_playwright

    executable = _executable()
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("CONTEXTEN_SCREENSHOT_DIR") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


class Watched:
    """A page plus what went wrong in it: script errors, console errors (CSP refusals
    show there), and dialogs (an ``alert`` would mean a script from a payload ran)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )

        async def dismiss(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", dismiss)
        page.set_default_timeout(TIMEOUT_MS)


async def open_as(
    browser: Any, served: Served | str, role_or_token: str, **options: Any
) -> Watched:
    """A new browser context logged in through the login URL (``/?token=...``)."""
    context = await browser.new_context(**options)
    watched = Watched(await context.new_page())
    if isinstance(served, Served):
        base, token = served.url, served.tokens[role_or_token]
    else:
        base, token = served, role_or_token
    await watched.page.goto(f"{base}/?token={token}")
    assert "token=" not in watched.page.url  # the token went into a cookie, out of the URL
    return watched


async def audit_types(served: Served) -> list[Event]:
    out: list[Event] = []
    for info in await served.app.store.list_streams(AUDIT_STREAM_PREFIX):
        out.extend(r.event for r in await served.app.store.read_stream(info.stream))
    return out


async def test_every_page_renders_in_chromium_without_errors(
    browser: Any, tmp_path: Path, shots: Path
) -> None:
    await leave_an_old_version(tmp_path)  # an instance of a version the code no longer has
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        w = await open_as(browser, served, "operator", viewport={"width": 1280, "height": 900})
        page = w.page
        await page.locator("#health-status").wait_for()
        cookies = await page.context.cookies()
        session = next(c for c in cookies if c["name"] == "contexten_session")
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"
        for link, marker in [
            ("Events", "table.events"),
            ("Workflows", "table.workflows"),
            ("Work items", "input[name=q]"),
            ("Dead letters", "table.letters"),
            ("Versions", "table.versions"),
            ("Overview", "#health-status"),
        ]:
            await page.get_by_role("link", name=link, exact=True).first.click()
            await page.locator(marker).first.wait_for()
        await page.get_by_role("link", name="Versions", exact=True).first.click()
        await page.get_by_role("link", name="1 blocked").click()  # the version's blocked ones
        await page.locator("table.blocked").wait_for()
        assert "version_not_registered" in await page.locator("table.blocked").inner_text()
        await page.screenshot(path=str(shots / "dashboard-versions.png"))
        await page.get_by_role("link", name="ship:ENG-OLD").click()
        assert await page.locator("#wf-status").inner_text() == "blocked"
        await page.goto(f"{served.url}/workflows/pr-lifecycle:pr-7")
        current = page.locator("svg.sm g.state.current")
        await current.wait_for()
        assert await current.get_attribute("data-state") == "in_review"
        await page.goto(f"{served.url}/work-items")
        await page.fill("input[name=q]", "ENG-1")
        await page.press("input[name=q]", "Enter")
        await page.locator("#work-item-timeline").wait_for()
        assert "test.poison.pill" in await page.locator("#work-item-timeline").inner_text()
        await page.goto(f"{served.url}/dead-letters/{ids['letter']}")
        await page.locator("#letter-status").wait_for()
        assert w.errors == []
        assert w.dialogs == []


async def test_pages_read_without_javascript(browser: Any, tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        w = await open_as(browser, served, "operator", java_script_enabled=False)
        page = w.page
        await page.goto(f"{served.url}/events")
        assert await page.locator("tr.event-row").count() > 0
        await page.goto(f"{served.url}/workflows/ship:ENG-2")
        assert await page.locator("#wf-status").inner_text() == "compensated"
        await page.goto(f"{served.url}/dead-letters/{ids['letter']}")
        await page.click("#redrive-one")  # plain forms: the confirmation works too
        await page.locator("#confirm").wait_for()


async def test_a_new_event_appears_live_without_a_reload(browser: Any, tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        w = await open_as(browser, served, "viewer")
        page = w.page
        await page.goto(f"{served.url}/events")
        await page.evaluate("window.__notReloaded = true")
        live = Event(type="test.live.arrived", subject="seen-live", correlation_id="ENG-9")
        await served.publish(live)
        rec = await served.app.store.get_event(live.id)
        assert rec is not None
        row = page.locator(f"#ev-{rec.position}")
        await row.wait_for()  # pushed by the server-sent events stream
        assert "test.live.arrived" in await row.inner_text()
        assert await page.evaluate("window.__notReloaded === true")
        assert w.errors == []


async def test_redrive_from_the_browser_is_done_once_and_audited(
    browser: Any, tmp_path: Path
) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        served.healed.add(ids["poison"])
        w = await open_as(browser, served, "operator")
        page = w.page
        await page.goto(f"{served.url}/dead-letters")
        await page.check(f"input[name=id][value='{ids['letter']}']")
        await page.click("#redrive-selected")
        await page.locator("h1", has_text="Redrive 1 dead letter?").wait_for()
        await page.click("#confirm")
        await page.locator("#done").wait_for()
        assert "Redriven: 1/1" in await page.locator("#done").inner_text()

        async def resolved() -> bool:
            letter = await served.app.dead_letters.get(ids["letter"])
            return letter.status is DeadLetterStatus.RESOLVED

        await wait_until(resolved)
        audits = [e for e in await audit_types(served) if e.type == "contexten.audit.dlq.redrive"]
        assert [(e.subject, e.data["outcome"], e.actor) for e in audits] == [
            (ids["letter"], "done", "operator-1")
        ]
        await page.goto(f"{served.url}/dead-letters/{ids['letter']}")
        assert await page.locator("#letter-status").inner_text() == "resolved"
        assert w.errors == []
        admin = await open_as(browser, served, "admin")
        await admin.page.goto(f"{served.url}/dead-letters/{ids['letter']}")
        assert "dlq.redrive" in await admin.page.locator("#letter-audit").inner_text()


async def test_a_viewer_cannot_redrive(browser: Any, tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        w = await open_as(browser, served, "viewer")
        page = w.page
        await page.goto(f"{served.url}/dead-letters/{ids['letter']}")
        await page.locator("#letter-status").wait_for()
        assert await page.locator("#redrive-one").count() == 0
        assert await page.locator("input[type=checkbox]").count() == 0
        csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
        # the same POST the operator's button sends, from this logged-in browser
        answer = await page.request.post(
            f"{served.url}/dead-letters/redrive",
            form={"csrf_token": csrf or "", "id": ids["letter"], "confirm": "yes"},
        )
        assert answer.status == 403
        assert (await served.app.dead_letters.get(ids["letter"])).status is DeadLetterStatus.PARKED


async def test_a_script_in_a_payload_renders_as_text(browser: Any, tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        hostile = Event(
            type="test.pull_request.opened",
            subject="<script>alert('subject')</script>",
            correlation_id="ENG-66",
            data={
                "title": '"><img src=x onerror=alert(1)>',
                "pull_request": {"html_url": "javascript:alert(2)"},
            },
        )
        await served.publish(hostile)
        w = await open_as(browser, served, "viewer")
        page = w.page
        for path in (f"/events/{hostile.id}", "/events", "/work-items/ENG-66"):
            await page.goto(served.url + path)
            await page.locator("main").wait_for()
        await page.goto(f"{served.url}/events/{hostile.id}")
        assert await page.locator("dd.subject").inner_text() == "<script>alert('subject')</script>"
        assert "onerror=alert(1)" in await page.locator("#payload").inner_text()
        assert await page.locator("main img").count() == 0
        assert await page.locator("main script").count() == 0
        assert await page.locator("a[href^='javascript:']").count() == 0
        await asyncio.sleep(0.2)  # give an injected script every chance to run
        assert w.dialogs == []


async def test_readable_on_a_phone(browser: Any, tmp_path: Path, shots: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        w = await open_as(
            browser, served, "operator", viewport={"width": 390, "height": 844}, is_mobile=True
        )
        page = w.page
        for path in ("/", "/events", "/workflows", "/workflows/ship:ENG-2", "/dead-letters"):
            await page.goto(served.url + path)
            await page.locator("main h1").wait_for()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{path} scrolls sideways by {overflow}px on a phone"
        await page.goto(served.url + "/")
        await page.screenshot(path=str(shots / "dashboard-phone.png"))
        assert w.errors == []


async def test_the_demo_scenario_in_the_browser(browser: Any, tmp_path: Path, shots: Path) -> None:
    """``contexten demo``'s own session: its login URL, the merged and the compensated work
    items, their timelines across platforms, and the screenshots for the README."""
    from contexten.cli.demo import DemoOptions, DemoSession

    _need_browser()
    options = DemoOptions(
        port=0,
        store_url=f"sqlite:///{tmp_path / 'demo.db'}",
        cwd=REPO_ROOT,
        agent_seconds=0.2,
        exit_when_done=False,
        timeout=HANG_GUARD,
    )
    output = io.StringIO()
    session = DemoSession(options, Console(file=output, width=200))
    running = asyncio.create_task(session.run())
    try:

        async def played() -> bool:
            if running.done():
                running.result()
            return "Still running: poke it" in output.getvalue()

        await wait_until(played)
        line = next(x for x in output.getvalue().splitlines() if "Dashboard" in x)
        url = line.split("): ", 1)[1].strip()
        base, token = url.split("/?token=")
        w = await open_as(browser, base, token, viewport={"width": 1100, "height": 760})
        page = w.page
        await page.locator("#health-status").wait_for()
        await page.screenshot(path=str(shots / "dashboard-overview.png"))

        await page.goto(f"{base}/workflows/implement-issue:ENG-1")
        assert await page.locator("#wf-status").inner_text() == "completed"
        history = await page.locator("#history").inner_text()
        assert "step completed" in history
        await page.screenshot(path=str(shots / "dashboard-workflow.png"), full_page=False)

        await page.goto(f"{base}/workflows/implement-issue:ENG-2")
        assert await page.locator("#wf-status").inner_text() == "compensated"
        assert "compensation" in await page.locator("#history").inner_text()

        await page.goto(f"{base}/work-items/ENG-1")
        timeline = await page.locator("#work-item-timeline").inner_text()
        for source in ("linear", "github", "slack", "codegen"):
            assert source in timeline, source
        links = page.locator("#work-item-timeline a.ext")
        assert await links.count() > 0
        await page.screenshot(path=str(shots / "dashboard-work-item.png"))
        assert w.errors == []
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        sys.modules.pop("devteam", None)
