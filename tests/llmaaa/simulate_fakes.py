"""A stand-in student for `llmaaa simulate` tests: the trainer is replaced by one whose word marginals,
embeddings and MC-dropout passes are a fixed function of the text, so the loop runs in seconds and what
each round must pick is known."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

import training.trainer
from training.model import PoolOutputs
from training.trainer import TrainResult


def text_rng(text: str) -> np.random.Generator:
    """A random generator seeded by the text alone."""
    return np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))


class TextDeterminedStudent:
    """Marginals and embeddings that depend on the text alone (so acquisition has a known answer)."""

    n_labels = 5

    def predict(self, texts: list[str]) -> list[list[Any]]:
        return [[] for _ in texts]

    def pool_outputs(self, texts: list[str]) -> PoolOutputs:
        marginals, embeddings = [], []
        for text in texts:
            rng = text_rng(text)
            marginals.append(rng.dirichlet(np.full(self.n_labels, 0.5), size=max(1, len(text.split()))))
            e = rng.normal(size=16)
            embeddings.append(e / np.linalg.norm(e))
        return PoolOutputs([m.astype(np.float32) for m in marginals], np.array(embeddings, np.float32))

    def mc_head_marginals(self, texts: list[str], seed: int = 0) -> list[np.ndarray]:
        """BALD's MC-dropout passes: two text-determined draws per sentence."""
        return [np.stack([m, text_rng(t + "#mc").dirichlet(np.full(self.n_labels, 0.5), size=len(m))])
                for t, m in zip(texts, self.pool_outputs(texts).marginals, strict=True)]


def record_training(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace `training.trainer.train` by a stand-in that returns a `TextDeterminedStudent`; the list it
    returns gets the texts of every training set, round by round."""
    seen: list[list[str]] = []

    def fake_train(train_set: list[Any], gold: list[Any], config: Any, **_: Any) -> TrainResult:
        seen.append([ex.text for ex in train_set])
        return TrainResult(TextDeterminedStudent(), {"best_epoch": 1, "train_time_s": 0.0})  # type: ignore[arg-type]

    monkeypatch.setattr(training.trainer, "train", fake_train)
    return seen
