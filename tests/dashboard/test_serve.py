"""``contexten serve`` serves the dashboard at ``/``, and the login URL it prints at its first
start logs a browser in."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from ingress._serving import ServeProcess  # the sibling test package (tests/ is on sys.path)

from ._support import HANG_GUARD

LOGIN_URL = re.compile(r"Dashboard:\s+(http://\S+/\?token=(\S+))")


async def test_the_printed_login_url_opens_the_dashboard(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, ["--store", f"sqlite:///{tmp_path / 'serve.db'}"], {})
    try:
        base = await serve.wait_ready()
        async with asyncio.timeout(HANG_GUARD):
            while not (match := LOGIN_URL.search(serve.log())):  # noqa: ASYNC110 - a log file
                await asyncio.sleep(0.05)
        url, token = match.group(1), match.group(2)
        assert url.startswith(base)
        async with httpx.AsyncClient(timeout=HANG_GUARD) as browser:
            anonymous = await browser.get(f"{base}/workflows")
            assert anonymous.status_code == 303
            assert anonymous.headers["location"] == "/login?next=/workflows"
            login = await browser.get(url)
            assert login.status_code == 303
            assert login.headers["location"] == "/"
            assert browser.cookies.get("contexten_session") == token
            overview = await browser.get(f"{base}/")
            assert overview.status_code == 200
            assert '<b class="role">admin</b>' in overview.text
            assert (
                await browser.get(f"{base}/static/vendor/htmx-2.0.11.min.js")
            ).status_code == 200
        serve.terminate()
        assert await serve.wait_exit() == 0
    finally:
        serve.close()
