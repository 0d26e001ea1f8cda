"""Pool scoring at scale: one batched student pass per new task, cached by (task id, model version).

A retrain changes the model version, so everything is scored again once; between retrains only tasks
that are new to the pool cost a forward pass.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class PoolModel(Protocol):
    def pool_outputs(self, texts: Sequence[str]) -> Any:
        """Returns an object with `marginals` (list of (n_words, n_labels)) and `embeddings` (n, d)."""
        ...


class PoolScoreCache:
    """Marginals and embeddings per task id for one model version, on disk (npz) and in memory."""

    def __init__(self, cache_dir: Path | None, model_version: str) -> None:
        self.path = cache_dir / f"{model_version}.npz" if cache_dir else None
        self.marginals: dict[str, np.ndarray] = {}
        self.embeddings: dict[str, np.ndarray] = {}
        if self.path and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            with np.load(self.path) as data:
                ids = json.loads(str(data["ids"]))
                offsets = data["offsets"]
                flat = data["marginals"]
                for i, task_id in enumerate(ids):
                    self.marginals[task_id] = flat[offsets[i] : offsets[i + 1]]
                    self.embeddings[task_id] = data["embeddings"][i]
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring unreadable pool-score cache %s (%s)", self.path, exc)
            self.marginals.clear()
            self.embeddings.clear()

    def save(self) -> None:
        if self.path is None or not self.embeddings:
            return
        ids = list(self.embeddings)
        lengths = [len(self.marginals[i]) for i in ids]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n_labels = next((m.shape[1] for m in self.marginals.values() if m.ndim == 2 and m.size), 1)
        flat = (np.concatenate([self.marginals[i].reshape(-1, n_labels) for i in ids])
                if sum(lengths) else np.zeros((0, n_labels), np.float32))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz")
        os.close(fd)
        np.savez(tmp, ids=np.array(json.dumps(ids)), offsets=offsets, marginals=flat.astype(np.float32),
                 embeddings=np.stack([self.embeddings[i] for i in ids]).astype(np.float32))
        os.replace(tmp, self.path)  # atomic: a crash never leaves a half-written cache


def score_pool(model: PoolModel, ids: Sequence[str], texts: Sequence[str], model_version: str,
               cache_dir: Path | None = None) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Marginals and embeddings for every task, in input order. Returns them and how many were computed."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    cache = PoolScoreCache(cache_dir, model_version)
    todo = [i for i, task_id in enumerate(ids) if task_id not in cache.embeddings]
    if todo:
        out = model.pool_outputs([texts[i] for i in todo])
        for j, i in enumerate(todo):
            cache.marginals[ids[i]] = np.asarray(out.marginals[j], dtype=np.float32)
            cache.embeddings[ids[i]] = np.asarray(out.embeddings[j], dtype=np.float32)
        cache.save()
    marginals = [cache.marginals[task_id] for task_id in ids]
    embeddings = (np.stack([cache.embeddings[task_id] for task_id in ids]) if ids
                  else np.zeros((0, 0), np.float32))
    return marginals, embeddings, len(todo)
