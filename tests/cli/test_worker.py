"""``contexten worker`` delivers what another process stored, and stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from contexten import App, Event

APP = """
from pathlib import Path

from contexten import App, Event, HandlerContext

app = App()
OUT = Path(__file__).with_name("handled.txt")


@app.on("github.push", name="recorder")
async def record(event: Event, ctx: HandlerContext) -> None:
    with OUT.open("a") as f:
        f.write(event.data["ref"] + "\\n")
"""


def test_worker_runs_the_handlers_of_events_stored_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'events.db'}"

    async def store_webhooks() -> None:
        web = App(url, dispatch=False)  # what `contexten serve --no-dispatch` runs
        async with web:
            for i in range(5):
                await web.publish(
                    Event(
                        type="github.push",
                        source="github",
                        subject="a/b",
                        data={"ref": f"refs/heads/b{i}"},
                    )
                )

    asyncio.run(store_webhooks())
    contexten = Path(sys.executable).with_name("contexten")
    proc = subprocess.Popen(
        [str(contexten), "worker", "--app", "myapp.py:app", "--store", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = tmp_path / "handled.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sorted(out.read_text().splitlines()) == [f"refs/heads/b{i}" for i in range(5)]
    assert '"worker starting"' in err or "worker starting" in err


def test_worker_with_a_bad_app_reference_is_a_clear_error(tmp_path: Path) -> None:
    contexten = Path(sys.executable).with_name("contexten")
    result = subprocess.run(
        [str(contexten), "worker", "--app", "nope.py:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
