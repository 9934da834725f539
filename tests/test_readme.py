"""The README stays true: its Python blocks run, and its shell examples succeed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent


def _blocks(language: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTEXTEN_STORE_URL"] = f"sqlite:///{tmp_path / 'readme.db'}"
    return env


def test_readme_has_examples() -> None:
    assert _blocks("python"), "the README lost its Python examples"
    assert _blocks("console"), "the README lost its shell examples"


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"block{index}.py"
    script.write_text(_blocks("python")[index])
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_commands_succeed_after_the_tour(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tour = tmp_path / "tour.py"
    tour.write_text(_blocks("python")[0])
    subprocess.run(
        [sys.executable, str(tour)],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    commands = [
        line.removeprefix("$ ").strip()
        for block in _blocks("console")
        for line in block.splitlines()
        if line.startswith("$ contexten ")
    ]
    assert commands
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        argv[0] = str(BIN / argv[0])
        result = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        outputs.append(result.stdout)
    assert "contexten.triage.completed" in outputs[0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_first_webhook_walkthrough(tmp_path: Path) -> None:
    """The "Taking webhooks" block: serve an example, simulate a signed webhook, list it."""
    import shutil
    import time
    import urllib.request

    block = next(b for b in _blocks("sh") if "contexten simulate" in b)
    port = _free_port()
    shutil.copytree(README.parent / "examples", tmp_path / "examples")
    env = _env(tmp_path)
    lines = [line for line in block.splitlines() if line.strip()]
    exports = [line.removeprefix("export ") for line in lines if line.startswith("export ")]
    for assignment in exports:
        name, _, value = assignment.partition("=")
        env[name] = value
    serve_line = next(line for line in lines if " serve " in line)
    assert serve_line.endswith("&")
    argv = shlex.split(serve_line.removesuffix("&"))
    argv[0] = str(BIN / "contexten")
    server = subprocess.Popen(
        [*argv, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        rest = lines[lines.index(serve_line) + 1 :]
        script = (
            "\n".join(rest)
            .replace("contexten simulate", f"contexten simulate --url http://127.0.0.1:{port}")
            .replace(".venv/bin/", f"{BIN}/")
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "github.pull_request.opened" in result.stdout
        deadline = time.monotonic() + 30
        while (
            "contexten.triage.completed"
            not in subprocess.run(
                [str(BIN / "contexten"), "events", "list"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        ):
            assert time.monotonic() < deadline, "the handler never ran"
            time.sleep(0.1)
    finally:
        server.terminate()
        server.communicate(timeout=60)
