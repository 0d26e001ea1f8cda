"""The LLM-label record and the per-thread SQLite connections under it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from backend.llm_labels import LLMFailure, LLMLabelStore
from backend.local_sqlite import ThreadLocalSQLite
from training.spans import Span


def test_labels_round_trip_and_a_relabel_replaces(tmp_path: Path) -> None:
    store = LLMLabelStore(tmp_path, project_id=7)
    store.put(1, "Aspirin helps.", [Span(0, 7, "Chemical")], source="predict")
    store.put(2, "Nothing here.", [], source="acquire")
    store.put(1, "Aspirin helps.", [Span(0, 7, "Drug")], source="acquire")
    assert len(store) == 2
    assert store.all() == {1: ("Aspirin helps.", [Span(0, 7, "Drug")]), 2: ("Nothing here.", [])}
    # A second store on the same directory (another process, say) sees the same rows.
    assert LLMLabelStore(tmp_path, project_id=7).all() == store.all()
    assert (tmp_path / "projects" / "7" / "llm_labels.sqlite3").exists()


def test_threads_write_through_their_own_connections(tmp_path: Path) -> None:
    store = LLMLabelStore(tmp_path, project_id=1)
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for i in range(25):
                store.put(offset + i, f"text {offset + i}", [Span(0, 4, "X")], source="thread")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store) == 100


def test_one_connection_per_thread_in_wal_mode(tmp_path: Path) -> None:
    db = ThreadLocalSQLite(tmp_path / "x.sqlite3", synchronous="NORMAL")
    here = db.conn()
    assert db.conn() is here
    other: list[object] = []
    t = threading.Thread(target=lambda: other.append(db.conn()))
    t.start()
    t.join()
    assert other[0] is not here
    assert here.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert here.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_failure_keeps_the_rung_that_failed_and_says_which_rung_comes_next(tmp_path: Path) -> None:
    store = LLMLabelStore(tmp_path, project_id=1)
    assert store.failure(5) is None
    store.record_failure(5, "Cisplatin caused it.", "cut_off", rung=0)
    assert store.failure(5).rung == 0 and store.failure(5).next_rung("Cisplatin caused it.") == 1
    store.record_failure(5, "Cisplatin caused it.", "timeout", rung=1)
    failure = store.failure(5)
    assert (failure.attempts, failure.rung, failure.reason) == (2, 1, "timeout")
    assert failure.next_rung("Cisplatin caused it.") == 1  # a transport failure asks the same rung again
    assert failure.next_rung("Another text.") == 0  # a changed task starts from the base request
    assert store.failures() == {5: failure}


def older_store(data_dir: Path, project_id: int, *statements: str) -> LLMLabelStore:
    """The store of `project_id` opened on a file an older version made with `statements`."""
    directory = data_dir / "projects" / str(project_id)
    directory.mkdir(parents=True)
    old = sqlite3.connect(directory / "llm_labels.sqlite3")
    for statement in statements:
        old.execute(statement)
    old.commit()
    old.close()
    return LLMLabelStore(data_dir, project_id=project_id)


def test_a_store_made_before_the_ladder_gains_the_rung_column(tmp_path: Path) -> None:
    store = older_store(
        tmp_path, 3,
        "CREATE TABLE llm_failures (task_id INTEGER PRIMARY KEY, text TEXT NOT NULL, reason TEXT NOT NULL, "
        "attempts INTEGER NOT NULL, ts REAL NOT NULL)",
        "INSERT INTO llm_failures VALUES (9, 'old text', 'cut_off', 2, 1.0)")
    assert store.failure(9) == LLMFailure(9, "old text", "cut_off", 2, 1.0, rung=0)  # it was a base request
    store.record_failure(9, "old text", "cut_off", rung=1)
    assert (store.failure(9).attempts, store.failure(9).rung) == (3, 1)


def test_a_store_made_before_label_rungs_keeps_its_labels_as_base_answers(tmp_path: Path) -> None:
    store = older_store(
        tmp_path, 4,
        "CREATE TABLE llm_labels (task_id INTEGER PRIMARY KEY, text TEXT NOT NULL, spans TEXT NOT NULL, "
        "source TEXT NOT NULL, ts REAL NOT NULL)",
        "INSERT INTO llm_labels VALUES (1, 'Aspirin .', '[[0, 7, \"Drug\"]]', 'llm', 1.0)")
    assert store.all() == {1: ("Aspirin .", [Span(0, 7, "Drug")])} and store.answered_rungs() == {}
    store.put(2, "Ibuprofen .", [Span(0, 9, "Drug")], "llm", rung=2)
    store.put(1, "Aspirin .", [], "llm")  # answered on the base request: not listed
    assert store.answered_rungs() == {2: ("Ibuprofen .", 2)} and len(store) == 2
    assert (store.answered_rung(2), store.answered_rung(1), store.answered_rung(99)) == (("Ibuprofen .", 2), None, None)
