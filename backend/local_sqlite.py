"""One SQLite connection per thread on a shared file: how the backend's small stores share a database.

sqlite3 connections must not cross threads, and the stores are used from Flask request threads, the
bulk annotator's pool and RQ workers at once. WAL mode lets readers run beside one writer across
processes; the busy timeout makes a writer wait for another instead of failing at once.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class ThreadLocalSQLite:
    """`conn()` gives this thread's connection to `path`, opening it (WAL, busy timeout) on first use."""

    def __init__(self, path: Path, *, timeout: float = 30.0, synchronous: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.synchronous = synchronous
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout)
            conn.execute("PRAGMA journal_mode=WAL")
            if self.synchronous:
                # NORMAL in WAL mode can lose the last commits on power loss, never corrupt: right for caches.
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
        return conn
