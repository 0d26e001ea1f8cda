"""A tiny end-to-end `llmaaa simulate` run: the whole offline LLMaAA loop on a slice of BC5CDR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmaaa.cli import main

pytestmark = pytest.mark.slow


def test_simulate_writes_results_and_learning_curve(tmp_path: Path, bc5cdr_dir: Path) -> None:
    out = tmp_path / "sim"
    code = main(["simulate", "--data", str(bc5cdr_dir), "--out", str(out), "--strategy", "least_confidence",
                 "--seed-size", "12", "--round-size", "8", "--rounds", "1", "--gold-size", "10",
                 "--teacher-noise", "0.5", "--max-epochs", "1", "--pool-size", "60", "--test-size", "30",
                 "--seed", "3"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["labels"] for r in results["rounds"]] == [12, 20]
    assert results["teacher"]["labels"] == 20 and 0.0 < results["teacher"]["f1"] < 1.0
    for key in ("f1", "precision", "recall"):
        assert 0.0 <= results["final"][key] <= 1.0
    assert results["config"]["strategy"] == "least_confidence" and results["config"]["reweight"] is True
    assert results["gold_size"] == 10 and results["test_size"] == 30
    # the learned weights are set against the teacher's known errors, per round
    weights = results["rounds"][-1]["weights"]
    assert weights["sentences"] == 20 and 0.0 < weights["wrong_label_share"] <= 1.0  # teacher F1 < 1
    assert 0.0 <= weights["zero_weight_share"] <= 1.0 and 0.0 <= weights["skipped_batch_share"] <= 1.0
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_simulate_rounds_zero_trains_once_and_gold_only_baseline(tmp_path: Path, bc5cdr_dir: Path) -> None:
    base = ["--data", str(bc5cdr_dir), "--seed-size", "10", "--gold-size", "8", "--max-epochs", "1",
            "--pool-size", "30", "--test-size", "20", "--no-reweight"]
    assert main(["simulate", "--out", str(tmp_path / "r0"), "--rounds", "0", *base]) == 0
    r0 = json.loads((tmp_path / "r0" / "results.json").read_text())
    assert len(r0["rounds"]) == 1 and r0["config"]["reweight"] is False
    assert "weights" not in r0["rounds"][0]  # nothing learned to report without reweighting
    assert main(["simulate", "--out", str(tmp_path / "gold"), "--gold-only", *base]) == 0
    gold = json.loads((tmp_path / "gold" / "results.json").read_text())
    assert gold["teacher"]["labels"] == 0 and gold["rounds"][0]["gold"] == 8


def test_a_shared_round_zero_gives_the_same_run_as_training_it(tmp_path: Path, bc5cdr_dir: Path) -> None:
    base = ["--data", str(bc5cdr_dir), "--seed-size", "10", "--round-size", "6", "--rounds", "1", "--gold-size", "8",
            "--max-epochs", "1", "--pool-size", "40", "--test-size", "20", "--teacher-noise", "0.4",
            "--strategy", "least_confidence"]
    cache = tmp_path / "cache"
    assert main(["simulate", "--out", str(tmp_path / "fresh"), *base, "--round0-cache", str(cache)]) == 0
    assert len(list(cache.glob("round0-*.npz"))) == 1
    assert main(["simulate", "--out", str(tmp_path / "shared"), *base, "--round0-cache", str(cache)]) == 0
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())
    shared = json.loads((tmp_path / "shared" / "results.json").read_text())
    assert "from_cache" not in fresh["rounds"][0] and shared["rounds"][0]["from_cache"] is True
    # round 1 is selected from the cached outputs and trained again: it must match the fresh run exactly
    for a, b in zip(fresh["rounds"], shared["rounds"], strict=True):
        keys = ("labels", "f1", "precision", "recall")
        assert [a[k] for k in keys] == [b[k] for k in keys]
    assert fresh["teacher"] == shared["teacher"]
    # another seed is another round 0: not shared
    assert main(["simulate", "--out", str(tmp_path / "seed7"), *base, "--seed", "7", "--round0-cache", str(cache)]) == 0
    assert len(list(cache.glob("round0-*.npz"))) == 2
