"""A private, throwaway PostgreSQL cluster for tests that must restart the server.

The shared server on 5432 is never restarted (other test runs use it); a test that needs a
PostgreSQL restart starts its own cluster with ``initdb`` and ``pg_ctl`` from the installed
server binaries, in a temporary directory, on a free loopback port. As root the binaries
refuse to run, so they run as the ``postgres`` user (``runuser``), who owns the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PrivateCluster", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` directory (with initdb and pg_ctl)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """One PostgreSQL cluster of this test's own: :meth:`start`, :meth:`restart`, :meth:`stop`.

    ``url`` is a trust-auth URL for its ``postgres`` database on 127.0.0.1.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ctx-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        self._started = False
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )

    def start(self) -> None:
        """initdb (trust auth, no fsync: the OS keeps what was written across a server
        crash, which is all a restart test needs) and start the server."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._started = True
        self.resume()

    def resume(self) -> None:
        """Start the (initialised, halted) server again."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=300 -c full_page_writes=off"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server as a crash would (``immediate``), keeping its data for
        :meth:`resume`."""
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )

    def restart(self, mode: str = "immediate") -> None:
        """Restart the server; ``immediate`` is a crash (recovery from the WAL at start)."""
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", mode,
            "-w", "-t", "60", "restart",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (if started) and delete the directory. Safe to call twice."""
        try:
            if self._started and (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)

    def server_log(self) -> str:
        """The server's log (for a failure report)."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError as e:
            return f"(no server log: {e})"
