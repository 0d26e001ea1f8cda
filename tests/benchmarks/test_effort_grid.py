"""The effort-curve harness: equal word budgets, a tiny end-to-end grid, and the report's numbers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training.trainer
from acquisition.cost import WordCost
from benchmarks import effort_grid as grid
from training.data import load_split, sample
from training.model import PoolOutputs
from training.trainer import TrainResult


def test_area_under_curve_is_the_mean_height_over_the_span() -> None:
    assert grid.area_under_curve([0, 10], [0.2, 0.4]) == pytest.approx(0.3)
    # Unequal spacing: the long flat stretch at 0.5 weighs 3 times the short ramp.
    assert grid.area_under_curve([0, 1, 4], [0.3, 0.5, 0.5]) == pytest.approx((0.4 * 1 + 0.5 * 3) / 4)
    assert grid.area_under_curve([5], [0.7]) == 0.7
    with pytest.raises(ValueError):
        grid.area_under_curve([0, 1], [0.1])


def test_grid_config_gives_every_strategy_the_same_word_budget(tmp_path: Path, bc5cdr_dir: Path) -> None:
    a = grid.grid_config("bc5cdr", "chatgpt", "random", "lc", 1, "cpu", tmp_path / "a")
    b = grid.grid_config("bc5cdr", "chatgpt", "random", "bald", 1, "cpu", tmp_path / "b")
    pool = sample(load_split(bc5cdr_dir / "train.jsonl"), 1500, 1)
    assert a.budget_unit == "words" and a.strategy == "least_confidence" and b.strategy == "bald"
    assert a.round_size == b.round_size == round(float(WordCost().costs(pool).mean()) * 200)
    assert (a.seed_size, a.rounds, a.pool_size, a.test_size) == (100, 2, 1500, 500)
    assert a.round0_cache == b.round0_cache  # shared round 0 (BALD trains its own, see llmaaa.simulate)



def test_cpu_plain_profile_trains_plain_with_its_own_epochs_and_every_run_resumes(tmp_path: Path,
                                                                                  bc5cdr_dir: Path) -> None:
    from llmaaa.simulate import build_train_config

    plain = grid.grid_config("bc5cdr", "chatgpt", "systematic", "lc", 1, "cpu-plain", tmp_path / "p")
    assert plain.resume and plain.recipe == "plain" and (plain.max_epochs, plain.patience) == (10, 2)
    train_cfg = build_train_config(plain)
    assert train_cfg.reweight is False and train_cfg.max_epochs == 10 and train_cfg.patience == 2
    legacy = grid.grid_config("bc5cdr", "chatgpt", "random", "lc", 1, "cpu", tmp_path / "c")
    assert legacy.resume and legacy.recipe is None and build_train_config(legacy).reweight is True


def test_a_dead_process_claim_is_taken_over_and_a_live_one_is_not(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run"
    assert grid.claim(out) is True
    assert grid.claim(out) is False  # held by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".claimed").write_text(dead.stdout.strip())
    assert grid.claim(out) is True  # its owner has exited
    (out / "results.json").write_text("{}")
    assert grid.claim(out) is False  # finished

def _run(dataset: str, strategy: str, seed: int, f1s: list[float], words: list[int], w: int) -> dict[str, Any]:
    rounds = [{"round": r, "labels": 10 + 5 * r, "f1": f, "words": x, "llm_tokens": 400 * (10 + 5 * r)}
              for r, (f, x) in enumerate(zip(f1s, words, strict=True))]
    return {"dataset": dataset, "teacher_name": "chatgpt", "noise": "random", "strategy": strategy, "seed": seed,
            "rounds": rounds, "config": {"round_size": w, "recipe": None, "max_epochs": 5},
            "train_config": {"max_epochs": 5, "patience": 2, "reweight": True}, "seconds": 60.0}


def test_report_tables_auc_and_goals() -> None:
    # Nominal budgets 100, 200, 300 words. lc beats random by 4 and 5 points at the end; density trails lc.
    runs = [
        _run("bc5cdr", "random", 1, [0.30, 0.40, 0.50], [100, 199, 298], 100),
        _run("bc5cdr", "random", 2, [0.30, 0.42, 0.52], [100, 200, 299], 100),
        _run("bc5cdr", "lc", 1, [0.30, 0.46, 0.54], [100, 200, 300], 100),
        _run("bc5cdr", "lc", 2, [0.30, 0.47, 0.57], [100, 199, 300], 100),
        _run("bc5cdr", "density", 1, [0.30, 0.44, 0.53], [100, 200, 297], 100),
    ]
    text = grid.report(runs)
    assert "| bc5cdr | chatgpt | random | lc | 2 | legacy, ≤5 epochs | 300 | 0.555 ± 0.021 | 300 |" in text
    # AUC of lc seed 1: (0.38·100 + 0.50·100) / 200 = 0.44; seed 2: (0.385 + 0.52) / 2 = 0.4525.
    assert "**0.446 ± 0.009 (2)**" in text
    assert "| bc5cdr | chatgpt | random | lc − random | 2 | +4.0, +5.0 | +4.5 | ≥ +3.0 | yes |" in text
    assert "| bc5cdr | chatgpt | random | density − lc | 1 | -1.0 | -1.0 | ≥ +0.0 | no |" in text
    assert grid.cpu_hours(runs, 60) == pytest.approx(1.0)
    # On average: lc (0.446) > density (seed 1 only: (0.37 + 0.485) / 2 = 0.4275) > random; density's gap is
    # paired with lc's seed 1 only (0.4275 − 0.44).
    ranking = grid.average_ranking(grid.summarise(runs))
    assert [s for s, _, _ in ranking] == ["lc", "density", "random"]
    assert ranking[0][1] == 1 and ranking[0][2] == pytest.approx((0.44 + 0.4525) / 2)
    assert grid.paired_auc_gaps(grid.summarise(runs), "density", "lc") == pytest.approx([-0.0125])
    assert "| 1 | lc | 1 | 0.446 | – | – |" in text
    assert "| 2 | density | 1 | 0.427 | -1.3 points | 1 |" in text  # -1.25 (float: just above)


def test_average_ranking_counts_only_cells_every_strategy_ran() -> None:
    # lc ran on conll2003 only, where every strategy scores high: that cell must not count for anyone.
    runs = [
        _run("bc5cdr", "random", 1, [0.30, 0.40, 0.50], [100, 200, 300], 100),
        _run("bc5cdr", "mnlp", 1, [0.30, 0.45, 0.55], [100, 200, 300], 100),
        _run("conll2003", "random", 1, [0.80, 0.90, 0.95], [100, 200, 300], 100),
    ]
    assert grid.average_ranking(grid.summarise(runs))[0][0] == "mnlp"
    assert grid.average_ranking(grid.summarise(runs[:1] + runs[2:]))[0][1] == 2  # random alone: both cells


def _rng(text: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))


class _Student:
    def predict(self, texts: list[str]) -> list[list[Any]]:
        return [[] for _ in texts]

    def pool_outputs(self, texts: list[str]) -> PoolOutputs:
        marg = [_rng(t).dirichlet(np.full(5, 0.5), size=len(t.split())).astype(np.float32) for t in texts]
        emb = np.array([_rng(t + "#e").normal(size=8) for t in texts], np.float32)
        return PoolOutputs(marg, emb)

    def mc_head_marginals(self, texts: list[str], seed: int = 0) -> list[np.ndarray]:
        return [_rng(t + "#mc").dirichlet(np.full(5, 0.5), size=(2, len(t.split()))) for t in texts]


@pytest.fixture
def tiny_data(tmp_path: Path, bc5cdr_dir: Path) -> Path:
    """The first sentences of each BC5CDR split (a temporary copy for the test only)."""
    root = tmp_path / "data" / "bc5cdr"
    root.mkdir(parents=True)
    for split, n in (("train", 120), ("dev", 60), ("test", 40)):
        lines = (bc5cdr_dir / f"{split}.jsonl").read_text().splitlines()[:n]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "data"


def test_a_tiny_grid_runs_end_to_end_and_reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 tiny_data: Path) -> None:
    monkeypatch.setattr(training.trainer, "train",
                        lambda *a, **k: TrainResult(_Student(), {"best_epoch": 1}))  # type: ignore[arg-type]
    done = grid.run_grid(["bc5cdr"], ["chatgpt"], ["random"], ["random", "lc", "bald"], [1], "smoke",
                         tmp_path / "out", data_root=tiny_data)
    assert [p.name for p in done] == [f"bc5cdr-chatgpt-random-{s}-s1" for s in ("random", "lc", "bald")]
    assert grid.run_grid(["bc5cdr"], ["chatgpt"], ["random"], ["lc"], [1], "smoke", tmp_path / "out",
                         data_root=tiny_data) == []  # finished runs are skipped
    runs = grid.load_runs(tmp_path / "out" / "smoke")
    w = runs[0]["config"]["round_size"]
    for run in runs:
        first, second = run["rounds"]
        assert first["labels"] == 10 and 0 < second["words"] - first["words"] <= w
    text = grid.report(runs)
    assert text.count("| bc5cdr | chatgpt | random |") >= 6  # 3 strategies × 2 budgets
    figs = grid.plot_curves(runs, tmp_path / "figs", "smoke")
    assert [f.name for f in figs] == ["effort-smoke-bc5cdr.png"] and figs[0].stat().st_size > 0
    assert json.loads((done[0] / "results.json").read_text())["config"]["budget_unit"] == "words"
