"""`llmaaa simulate --budget-unit`: rounds buy words or LLM tokens, never more than the round's budget."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training.trainer
from acquisition.cost import TokenCost, WordCost
from llmaaa.simulate import SimulationConfig, run_simulation
from training.data import load_split, sample
from training.model import PoolOutputs
from training.trainer import TrainResult


def _rng(text: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))


class FixedStudent:
    """Word marginals, embeddings and MC passes that depend on the text alone."""

    n_labels = 5

    def predict(self, texts: list[str]) -> list[list[Any]]:
        return [[] for _ in texts]

    def pool_outputs(self, texts: list[str]) -> PoolOutputs:
        marg = [_rng(t).dirichlet(np.full(self.n_labels, 0.5), size=len(t.split())).astype(np.float32)
                for t in texts]
        emb = np.array([_rng(t + "#e").normal(size=8) for t in texts], np.float32)
        return PoolOutputs(marg, emb / np.linalg.norm(emb, axis=1, keepdims=True))

    def mc_head_marginals(self, texts: list[str], seed: int = 0) -> list[np.ndarray]:
        return [_rng(t + "#mc").dirichlet(np.full(self.n_labels, 0.5), size=(3, len(t.split()))) for t in texts]


@pytest.fixture
def trained_sets(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake_train(train_set: list[Any], gold: list[Any], config: Any, **_: Any) -> TrainResult:
        seen.append([ex.text for ex in train_set])
        return TrainResult(FixedStudent(), {"best_epoch": 1, "train_time_s": 0.0})  # type: ignore[arg-type]

    monkeypatch.setattr(training.trainer, "train", fake_train)
    return seen


@pytest.mark.parametrize(("unit", "round_size", "strategy"),
                         [("words", 150, "least_confidence"), ("words", 150, "bald"),
                          ("words", 150, "density_hybrid"), ("tokens", 2500, "random")])
def test_each_round_buys_at_most_its_budget_and_no_left_out_sentence_fits(
    unit: str, round_size: int, strategy: str, trained_sets: list[list[str]], tmp_path: Path, bc5cdr_dir: Path
) -> None:
    cfg = SimulationConfig(data=bc5cdr_dir, out=tmp_path, strategy=strategy, seed_size=10, round_size=round_size,
                           rounds=2, gold_size=8, pool_size=80, test_size=10, seed=4, max_epochs=1, budget_unit=unit)
    results = run_simulation(cfg)
    price = (WordCost() if unit == "words" else TokenCost()).costs
    pool_texts = [ex.text for ex in sample(load_split(bc5cdr_dir / "train.jsonl"), 80, 4)]
    assert len(trained_sets) == 3 and len(trained_sets[0]) == 10  # the seed set stays 10 sentences
    for before, after, rec in zip(trained_sets[:-1], trained_sets[1:], results["rounds"][1:], strict=True):
        assert after[: len(before)] == before
        new = after[len(before):]
        spent = float(price(new).sum())
        assert 0 < spent <= round_size
        left_out = [t for t in pool_texts if t not in set(after)]
        assert float(price(left_out).min()) > round_size - spent  # the round is filled as far as it goes
        assert rec["words"] == int(WordCost().costs(after).sum())
        assert rec["llm_tokens"] == int(TokenCost().costs(after).sum())
    assert results["config"]["budget_unit"] == unit


def test_sentence_unit_records_effort_too(trained_sets: list[list[str]], tmp_path: Path, bc5cdr_dir: Path) -> None:
    cfg = SimulationConfig(data=bc5cdr_dir, out=tmp_path, strategy="mnlp", seed_size=10, round_size=6, rounds=1,
                           gold_size=8, pool_size=60, test_size=10, seed=4, max_epochs=1)
    results = run_simulation(cfg)
    assert [r["labels"] for r in results["rounds"]] == [10, 16]
    assert [r["words"] for r in results["rounds"]] == [int(WordCost().costs(s).sum()) for s in trained_sets]


def test_budget_unit_errors(tmp_path: Path, bc5cdr_dir: Path) -> None:
    with pytest.raises(ValueError, match="budget unit must be one of"):
        SimulationConfig(data=bc5cdr_dir, out=tmp_path, budget_unit="pages")
    with pytest.raises(ValueError, match="--budgets counts sentences"):
        SimulationConfig(data=bc5cdr_dir, out=tmp_path, budget_unit="words", budgets=[10, 20])
