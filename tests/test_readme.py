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
