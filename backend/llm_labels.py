"""A record of the LLM's labels per task: the retrain job's training data.

Label Studio stores one prediction per task and version, whatever produced it; once the student serves
predictions, Label Studio alone cannot tell LLM labels from student ones. So every task the LLM
annotates (live in /predict, or in bulk for an acquisition round) is also recorded here: SQLite in the
project's state directory, safe for several processes on one machine or a shared volume.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.annotator.retry_ladder import next_rung
from backend.local_sqlite import ThreadLocalSQLite
from training.spans import Span

log = logging.getLogger(__name__)

# `rung`: the ladder rung whose request was answered (0: the base request), so a later re-ask of the same
# text starts where the LLM last answered instead of at the request that failed on it before.
_SCHEMA = """CREATE TABLE IF NOT EXISTS llm_labels (
    task_id INTEGER PRIMARY KEY, text TEXT NOT NULL, spans TEXT NOT NULL, source TEXT NOT NULL, ts REAL NOT NULL,
    rung INTEGER NOT NULL DEFAULT 0)"""
_ADD_LABEL_RUNG = "ALTER TABLE llm_labels ADD COLUMN rung INTEGER NOT NULL DEFAULT 0"
# Tasks whose last LLM call failed: "not annotated", with the reason, how often it was tried and the rung of
# the content-retry ladder that failed (backend.annotator.retry_ladder), so the retrier can back off, the
# next attempt can send a changed request, and the queue can show them last and marked.
_FAILURES = """CREATE TABLE IF NOT EXISTS llm_failures (
    task_id INTEGER PRIMARY KEY, text TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
    ts REAL NOT NULL, rung INTEGER NOT NULL DEFAULT 0)"""
# Stores made before the ladder have no `rung` column: their failures were all base requests (rung 0).
_ADD_RUNG = "ALTER TABLE llm_failures ADD COLUMN rung INTEGER NOT NULL DEFAULT 0"
_FAILURE_COLUMNS = "task_id, text, reason, attempts, ts, rung"


@dataclass(frozen=True)
class LLMFailure:
    task_id: int
    text: str
    reason: str
    attempts: int
    ts: float
    rung: int = 0  # the ladder rung whose request failed (0: the base request)

    def next_rung(self, text: str) -> int:
        """The ladder rung to ask `text` on next: up one after a content failure, the same after a transport
        one, 0 when the task's text changed since (a new text starts from the base request)."""
        return next_rung(self.rung, self.reason) if text == self.text else 0


class LLMLabelStore:
    def __init__(self, data_dir: Path, project_id: int) -> None:
        directory = Path(data_dir) / "projects" / str(project_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "llm_labels.sqlite3"
        self._conn = ThreadLocalSQLite(self.path).conn  # this thread's connection
        with self._conn() as conn:
            conn.execute(_SCHEMA)
            conn.execute(_FAILURES)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(llm_failures)")}
            if "rung" not in columns:
                conn.execute(_ADD_RUNG)
            # Stores made before: their labels were all answers to the base request (rung 0).
            if "rung" not in {row[1] for row in conn.execute("PRAGMA table_info(llm_labels)")}:
                conn.execute(_ADD_LABEL_RUNG)

    def put(self, task_id: int, text: str, spans: Iterable[Span], source: str, rung: int = 0) -> None:
        payload = json.dumps([[s.start, s.end, s.label] for s in spans])
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO llm_labels (task_id, text, spans, source, ts, rung) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (int(task_id), text, payload, source, time.time(), int(rung)))
            conn.execute("DELETE FROM llm_failures WHERE task_id = ?", (int(task_id),))

    def record_failure(self, task_id: int, text: str, reason: str, rung: int = 0) -> int:
        """Count one more failed attempt (its request was ladder rung `rung`); an earlier successful label of
        the same text stays valid."""
        with self._conn() as conn:
            row = conn.execute("SELECT attempts, text FROM llm_failures WHERE task_id = ?", (int(task_id),)).fetchone()
            attempts = (int(row[0]) if row and row[1] == text else 0) + 1
            conn.execute(f"INSERT OR REPLACE INTO llm_failures ({_FAILURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                         (int(task_id), text, reason, attempts, time.time(), int(rung)))
        return attempts

    def failures(self) -> dict[int, LLMFailure]:
        rows = self._conn().execute(f"SELECT {_FAILURE_COLUMNS} FROM llm_failures").fetchall()
        return {int(r[0]): _failure(r) for r in rows}

    def failure(self, task_id: int) -> LLMFailure | None:
        """The task's failure record, if its last LLM call failed."""
        row = self._conn().execute(f"SELECT {_FAILURE_COLUMNS} FROM llm_failures WHERE task_id = ?",
                                   (int(task_id),)).fetchone()
        return None if row is None else _failure(row)

    def forget_failure(self, task_id: int) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM llm_failures WHERE task_id = ?", (int(task_id),))

    def all(self) -> dict[int, tuple[str, list[Span]]]:
        rows = self._conn().execute("SELECT task_id, text, spans FROM llm_labels").fetchall()
        return {tid: (text, [Span(a, b, lab) for a, b, lab in json.loads(spans)]) for tid, text, spans in rows}

    def texts(self) -> dict[int, str]:
        """task id -> the text the LLM labelled (no spans decoded): one read answers "did the LLM annotate
        this text?" for a whole project (`DemoSync.refresh`)."""
        rows = self._conn().execute("SELECT task_id, text FROM llm_labels").fetchall()
        return {int(tid): text for tid, text in rows}

    def answered_rungs(self) -> dict[int, tuple[str, int]]:
        """task id -> (text, rung) for the labels answered above the base request (rung > 0)."""
        rows = self._conn().execute("SELECT task_id, text, rung FROM llm_labels WHERE rung > 0").fetchall()
        return {int(tid): (text, int(rung)) for tid, text, rung in rows}

    def answered_rung(self, task_id: int) -> tuple[str, int] | None:
        """(text, rung) of the task's label if it was answered above the base request: one key lookup, for
        the single-task path (live /predict), where `answered_rungs` would scan the table per call."""
        row = self._conn().execute("SELECT text, rung FROM llm_labels WHERE task_id = ? AND rung > 0",
                                   (int(task_id),)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM llm_labels").fetchone()[0])


def _failure(row: Any) -> LLMFailure:
    return LLMFailure(int(row[0]), row[1], row[2], int(row[3]), float(row[4]), int(row[5]))


class DeferredLabelStore:
    """An `LLMLabelStore` that writes nothing to disk until the project is confirmed by Label Studio.

    Any client may name any project id in a web request; LLM outcomes of an unconfirmed project wait in
    memory (at most `max_pending`, the rest are dropped with a warning) and are written once it is confirmed.
    """

    def __init__(self, open_store: Callable[[], LLMLabelStore], confirmed: Callable[[], bool],
                 max_pending: int = 256) -> None:
        self._open_store = open_store
        self._confirmed = confirmed
        self._store: LLMLabelStore | None = None
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self.max_pending = max_pending

    def _real(self) -> LLMLabelStore | None:
        with self._lock:
            if self._store is None and self._confirmed():
                self._store = self._open_store()
                pending, self._pending = self._pending, []
                for method, args in pending:
                    getattr(self._store, method)(*args)
            return self._store

    def _write(self, method: str, *args: Any) -> Any:
        store = self._real()
        if store is not None:
            return getattr(store, method)(*args)
        with self._lock:
            if len(self._pending) < self.max_pending:
                self._pending.append((method, args))
            else:
                log.warning("project not confirmed by Label Studio: an LLM outcome was not recorded")
        return None

    def put(self, task_id: int, text: str, spans: Iterable[Span], source: str, rung: int = 0) -> None:
        self._write("put", task_id, text, list(spans), source, rung)

    def record_failure(self, task_id: int, text: str, reason: str, rung: int = 0) -> int:
        return int(self._write("record_failure", task_id, text, reason, rung) or 1)

    def forget_failure(self, task_id: int) -> None:
        self._write("forget_failure", task_id)

    def all(self) -> dict[int, tuple[str, list[Span]]]:
        store = self._real()
        return store.all() if store is not None else {}

    def texts(self) -> dict[int, str]:
        store = self._real()
        return store.texts() if store is not None else {}

    def failures(self) -> dict[int, LLMFailure]:
        store = self._real()
        return store.failures() if store is not None else {}

    def answered_rungs(self) -> dict[int, tuple[str, int]]:
        store = self._real()
        return store.answered_rungs() if store is not None else {}

    def answered_rung(self, task_id: int) -> tuple[str, int] | None:
        store = self._real()
        return store.answered_rung(task_id) if store is not None else None

    def failure(self, task_id: int) -> LLMFailure | None:
        store = self._real()
        return store.failure(task_id) if store is not None else None
