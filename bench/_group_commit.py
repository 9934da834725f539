"""The raw limit the durable benchmarks compare against: SQLite group commit, nothing else.

One thread, one connection, one transaction (one fsync, ``synchronous=FULL`` in WAL mode) per
batch of whatever inserts queued up meanwhile; each inserter awaits its batch's commit. No
envelope, no checks, no reading back: what the disk and SQLite allow for this durability.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path


class GroupCommitWriter:
    """Inserts ``body`` blobs into ``table``, group-committed by one writer thread."""

    def __init__(self, path: Path, table: str = "events") -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, body BLOB)")
        self.insert_sql = f"INSERT INTO {table}(body) VALUES (?)"
        self.pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self.cv = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.pending and not self.stop:
                    self.cv.wait()
                if self.stop and not self.pending:
                    return
                batch, self.pending = self.pending, []
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.insert_sql, [(b,) for b, _ in batch])
            self.conn.execute("COMMIT")
            for _, fut in batch:
                fut.get_loop().call_soon_threadsafe(fut.set_result, None)

    async def insert(self, body: bytes) -> None:
        """Insert ``body``; returns once the batch holding it is committed."""
        fut = asyncio.get_running_loop().create_future()
        with self.cv:
            self.pending.append((body, fut))
            self.cv.notify()
        await fut

    def close(self) -> None:
        """Commit what is queued, stop the thread, close the connection."""
        with self.cv:
            self.stop = True
            self.cv.notify()
        self.thread.join()
        self.conn.close()
