"""k-NN demonstrations: the human-verified examples most similar to a query (the paper's k-NN demos)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from backend.annotator.prompt import Demo
from training.spans import Span


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class _Entry:
    text: str
    spans: list[Span]
    vector: np.ndarray


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class DemoIndex:
    """Verified examples keyed by id (the task id). Embeds only new or changed texts. Thread-safe."""

    def __init__(self, embedder: Embedder, k: int = 5) -> None:
        self.embedder = embedder
        self.k = k
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._matrix: np.ndarray | None = None  # stacked vectors, rebuilt lazily after a change
        self._ids: list[str] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, example_id: object) -> bool:
        with self._lock:
            return str(example_id) in self._entries

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def upsert(self, example_id: str, text: str, spans: Iterable[Span]) -> None:
        self.upsert_many([(example_id, text, spans)])

    def upsert_many(self, items: Iterable[tuple[str, str, Iterable[Span]]]) -> int:
        """Add or update examples; returns how many texts had to be embedded."""
        items = [(str(i), t, list(s)) for i, t, s in items]
        with self._lock:
            known = {e.text: e.vector for e in self._entries.values()}
        todo = sorted({t for _, t, _ in items if t not in known})
        # Embedding runs outside the lock: nearest() keeps answering meanwhile.
        vectors = _unit(self.embedder.embed(todo)) if todo else np.zeros((0, 0), np.float32)
        fresh = dict(zip(todo, vectors, strict=True))
        with self._lock:
            known.update({e.text: e.vector for e in self._entries.values()})
            for example_id, text, spans in items:
                self._entries[example_id] = _Entry(text, sorted(spans), known.get(text, fresh.get(text)))
            self._matrix = None
        return len(todo)

    def remove(self, example_id: str) -> bool:
        with self._lock:
            found = self._entries.pop(str(example_id), None) is not None
            if found:
                self._matrix = None
            return found

    def nearest(self, query_text: str, k: int | None = None) -> list[Demo]:
        """Up to k demos by cosine similarity, MOST SIMILAR LAST; never the query's own text."""
        k = self.k if k is None else k
        with self._lock:
            if k <= 0 or not self._entries:
                return []
            if self._matrix is None:
                self._ids = sorted(self._entries)
                self._matrix = np.stack([self._entries[i].vector for i in self._ids])
            ids, matrix = self._ids, self._matrix
            entries = dict(self._entries)
        target = query_text.strip()
        candidates = [n for n, i in enumerate(ids) if entries[i].text.strip() != target]
        if not candidates:
            return []
        query = _unit(self.embedder.embed([query_text]))[0]
        sims = matrix[candidates] @ query
        # Sorted on (-similarity, id): ties are broken the same way every time.
        order = sorted(range(len(candidates)), key=lambda n: (-float(sims[n]), ids[candidates[n]]))
        chosen: list[_Entry] = []
        seen: set[str] = set()
        for n in order:
            entry = entries[ids[candidates[n]]]
            if entry.text not in seen:  # two tasks with one text make one demo, not two
                seen.add(entry.text)
                chosen.append(entry)
                if len(chosen) == k:
                    break
        return [Demo(e.text, list(e.spans)) for e in reversed(chosen)]
