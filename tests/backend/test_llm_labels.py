"""The LLM-label record and the per-thread SQLite connections under it."""

from __future__ import annotations

import threading
from pathlib import Path

from backend.llm_labels import LLMLabelStore
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
