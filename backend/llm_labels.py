"""A record of the LLM's labels per task: the retrain job's training data.

Label Studio stores one prediction per task and version, whatever produced it; once the student serves
predictions, Label Studio alone cannot tell LLM labels from student ones. So every task the LLM
annotates (live in /predict, or in bulk for an acquisition round) is also recorded here: SQLite in the
project's state directory, safe for several processes on one machine or a shared volume.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from backend.local_sqlite import ThreadLocalSQLite
from training.spans import Span

_SCHEMA = """CREATE TABLE IF NOT EXISTS llm_labels (
    task_id INTEGER PRIMARY KEY, text TEXT NOT NULL, spans TEXT NOT NULL, source TEXT NOT NULL, ts REAL NOT NULL)"""


class LLMLabelStore:
    def __init__(self, data_dir: Path, project_id: int) -> None:
        directory = Path(data_dir) / "projects" / str(project_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "llm_labels.sqlite3"
        self._conn = ThreadLocalSQLite(self.path).conn  # this thread's connection
        with self._conn() as conn:
            conn.execute(_SCHEMA)

    def put(self, task_id: int, text: str, spans: Iterable[Span], source: str) -> None:
        payload = json.dumps([[s.start, s.end, s.label] for s in spans])
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO llm_labels VALUES (?, ?, ?, ?, ?)",
                         (int(task_id), text, payload, source, time.time()))

    def all(self) -> dict[int, tuple[str, list[Span]]]:
        rows = self._conn().execute("SELECT task_id, text, spans FROM llm_labels").fetchall()
        return {tid: (text, [Span(a, b, lab) for a, b, lab in json.loads(spans)]) for tid, text, spans in rows}

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM llm_labels").fetchone()[0])
