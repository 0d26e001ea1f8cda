"""`llmaaa simulate --budget-unit`: rounds buy words or LLM tokens, never more than the round's budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from acquisition.cost import TokenCost, WordCost
from llmaaa.simulate import SimulationConfig, run_simulation
from tests.llmaaa.simulate_fakes import record_training
from training.data import load_split, sample


@pytest.fixture
def trained_sets(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    return record_training(monkeypatch)


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
