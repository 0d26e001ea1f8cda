"""Disk cache of successful LLM replies, so re-predicting a task (or a restart) costs nothing.

One SQLite file, one connection per thread, WAL mode and a busy timeout, so threads of one process
and several processes (web workers, queue workers) can share it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backend.annotator.client import Completion
from backend.local_sqlite import ThreadLocalSQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    template_id TEXT NOT NULL,
    content TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


class ReplyCache:
    """`get`/`put` LLM replies by `key(model, template_id, messages)`."""

    def __init__(self, directory: str | Path, filename: str = "replies.sqlite3") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / filename
        self._conn = ThreadLocalSQLite(self.path, synchronous="NORMAL").conn  # this thread's connection
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        with self._conn() as conn:
            conn.execute(_SCHEMA)

    @staticmethod
    def key(model: str, template_id: str, messages: Sequence[Mapping[str, str]],
            sampling: Mapping[str, Any] | None = None) -> str:
        """sha256 over the model, the template (id and hash), the exact rendered messages and, for a sampled
        request (a retry after a content failure), its temperature and seed: a reply is only ever served
        for the request that produced it. Greedy requests pass no `sampling`, so their keys are unchanged."""
        parts: list[Any] = [model, template_id, [dict(m) for m in messages]]
        if sampling:
            parts.append(dict(sampling))
        payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Completion | None:
        row = self._conn().execute(
            "SELECT content, prompt_tokens, completion_tokens, model FROM replies WHERE key = ?", (key,)
        ).fetchone()
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        if row is None:
            return None
        return Completion(content=row[0], prompt_tokens=row[1], completion_tokens=row[2], model=row[3],
                          latency_s=0.0, attempts=0)

    def put(self, key: str, completion: Completion, template_id: str = "") -> None:
        """Store a reply. Call it only for replies that parsed: a failure must be asked again."""
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, completion.model, template_id, completion.content, completion.prompt_tokens,
                 completion.completion_tokens, time.time()),
            )

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def __contains__(self, key: str) -> bool:
        return self._conn().execute("SELECT 1 FROM replies WHERE key = ?", (key,)).fetchone() is not None
