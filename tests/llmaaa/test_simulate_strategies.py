"""Every acquisition strategy drives `llmaaa simulate`'s loop (with a stand-in student, so it runs in seconds).

The real student is trained in test_simulate.py; here the trainer is replaced by one whose word
marginals and embeddings are a fixed function of the text (tests/llmaaa/simulate_fakes.py), so what each
round must pick is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acquisition import available_strategies
from llmaaa.simulate import SimulationConfig, run_simulation
from tests.llmaaa.simulate_fakes import TextDeterminedStudent, record_training


def least_confident_first(text: str) -> float:
    return float(TextDeterminedStudent().pool_outputs([text]).marginals[0].max(axis=1).mean())


@pytest.fixture
def trained_sets(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    return record_training(monkeypatch)


@pytest.mark.parametrize("strategy", available_strategies())
def test_each_strategy_adds_exactly_k_new_sentences_per_round(
    strategy: str, trained_sets: list[list[str]], tmp_path: Path, bc5cdr_dir: Path
) -> None:
    cfg = SimulationConfig(data=bc5cdr_dir, out=tmp_path, strategy=strategy, seed_size=10, round_size=6, rounds=2,
                           gold_size=8, pool_size=60, test_size=10, seed=4, max_epochs=1)
    results = run_simulation(cfg)
    assert [r["labels"] for r in results["rounds"]] == [10, 16, 22]
    assert [len(s) for s in trained_sets] == [10, 16, 22]
    for before, after in zip(trained_sets, trained_sets[1:], strict=False):
        assert after[: len(before)] == before  # earlier labels are kept
        assert len(set(after)) == len(after)  # nothing picked twice
    assert json.loads((tmp_path / "results.json").read_text())["config"]["strategy"] == strategy


def test_least_confidence_picks_the_least_confident_sentences(
    trained_sets: list[list[str]], tmp_path: Path, bc5cdr_dir: Path
) -> None:
    cfg = SimulationConfig(data=bc5cdr_dir, out=tmp_path, strategy="least_confidence", seed_size=10, round_size=6,
                           rounds=1, gold_size=8, pool_size=60, test_size=10, seed=4, max_epochs=1)
    results = run_simulation(cfg)
    seed_texts, after = trained_sets
    from training.data import load_split, sample

    pool = sample(load_split(bc5cdr_dir / "train.jsonl"), 60, 4)
    unlabeled = [ex.text for ex in pool if ex.text not in set(seed_texts)]
    expected = sorted(unlabeled, key=least_confident_first)[:6]
    assert set(after[10:]) == set(expected)
    assert results["rounds"][-1]["labels"] == 16


def test_an_unknown_strategy_is_a_clear_error(tmp_path: Path, bc5cdr_dir: Path) -> None:
    cfg = SimulationConfig(data=bc5cdr_dir, out=tmp_path, strategy="most_fun", pool_size=20, test_size=5)
    with pytest.raises(ValueError, match="unknown strategy 'most_fun'"):
        run_simulation(cfg)
