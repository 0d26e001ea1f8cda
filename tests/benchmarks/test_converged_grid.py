"""The converged grid harness: run order, claims that survive a killed process, configs, and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import converged_grid as grid
from llmaaa.simulation.noise import calibrated_noise


def test_the_most_informative_runs_come_first() -> None:
    order = grid.run_order(grid.DATASETS, grid.TEACHERS, grid.NOISE_KINDS, grid.RECIPES, grid.SEEDS)
    assert len(order) == 2 * 2 * 2 * 3 * 3 == len(set(order))
    assert order[:6] == [("bc5cdr", t, "systematic", r, 1) for t in ("chatgpt", "weak") for r in grid.RECIPES]
    assert {o[4] for o in order[:24]} == {1}  # every cell once before the second seed


def test_claims_are_exclusive_and_a_dead_owners_claim_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert grid.claim(out) is True
    assert (out / ".claimed").read_text() == str(os.getpid())
    assert grid.claim(out) is False  # held by a live process (this one)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".claimed").write_text(dead.stdout.strip())  # the grid process that held it was killed
    assert grid.claim(out) is True
    (out / "results.json").write_text("{}")
    (out / ".claimed").unlink()
    assert grid.claim(out) is False  # finished


def test_grid_config_uses_the_calibrated_teacher_and_the_issue_budget(tmp_path: Path) -> None:
    cfg = grid.grid_config("conll2003", "weak", "systematic", "plain", 2, "converged", tmp_path)
    assert cfg.teacher_kind == "systematic" and cfg.recipe == "plain" and cfg.seed == 2
    assert cfg.teacher_noise == calibrated_noise("systematic", "conll2003", "weak")
    assert cfg.budgets == [100, 300, 500, 1000, 2000] and cfg.gold_size == 100 and cfg.test_size >= 1000
    assert cfg.strategy == "least_confidence" and cfg.resume is True
    assert cfg.round_sizes() == [200, 200, 500, 1000]


def fake_rounds(f1s: list[float], teacher: float) -> list[dict[str, Any]]:
    return [{"round": i, "labels": b, "f1": f, "teacher_f1": teacher, "best_epoch": 4, "train_seconds": 0.5 * b}
            for i, (b, f) in enumerate(zip([100, 300, 500, 1000, 2000], f1s, strict=False))]


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(grid, "OUT_ROOT", tmp_path / "converged")
    root = tmp_path / "converged" / "converged"
    # bc5cdr, ChatGPT-like systematic teacher (F1 0.70): recipe 0.78 / 0.79 at 2,000, plain 0.80 / 0.78
    for seed, rec, plain in ((1, 0.78, 0.80), (2, 0.79, 0.78)):
        for recipe, final in (("recipe", rec), ("plain", plain)):
            folder = root / grid.run_name("bc5cdr", "chatgpt", "systematic", recipe, seed)
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps(
                {"rounds": fake_rounds([0.5, 0.6, 0.7, 0.75, final], 0.70), "teacher": {"f1": 0.70}}))
    # weak systematic: recipe +4 points over plain at 2,000; one run still in progress (no 2,000 yet)
    for recipe, final in (("recipe", 0.44), ("plain", 0.40)):
        folder = root / grid.run_name("bc5cdr", "weak", "systematic", recipe, 1)
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(
            {"rounds": fake_rounds([0.3, 0.35, 0.38, 0.39, final], 0.35), "teacher": {"f1": 0.35}}))
    folder = root / grid.run_name("bc5cdr", "weak", "systematic", "l2rw", 1)
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(json.dumps({"rounds": fake_rounds([0.3, 0.36], 0.35)}))
    return tmp_path


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_tables_differences_and_goals(results: Path) -> None:
    text = grid.report("converged", figures=results / "figures")
    assert "3 finished runs" not in text and "6 finished runs, 1 in progress" in text
    row = next(line for line in text.splitlines() if line.startswith("| bc5cdr | chatgpt | systematic | recipe |"))
    assert "0.700 ± 0.000 (2) | 0.700 ± 0.000 (2)" in row and "0.785 ± 0.005 (2)" in row
    assert "100: 0.500 300: 0.600 500: 0.700 1000: 0.750 2000: 0.785" in row
    in_progress = next(line for line in text.splitlines() if line.startswith("| bc5cdr | weak | systematic | l2rw |"))
    assert cells(in_progress)[4:10] == ["–", "–", "–", "–", "100: 0.300 300: 0.360", "4,4"]
    diffs = next(line for line in text.splitlines() if line.startswith("| bc5cdr | chatgpt | systematic | +"))
    # recipe − plain at 500: 0; at 2,000: (−2 + 1) / 2 = −0.5; recipe − teacher at 2,000: +8.5
    assert diffs.split(" | ")[3:5] == ["+0.0 ± 0.0 (2)", "-0.5 ± 1.5 (2)"]
    assert "+8.5 ± 0.5 (2)" in diffs
    goals = {tuple(c[:3]): c[-1] for line in text.splitlines() if len(c := cells(line)) == 6 and "≥" in c[0]}
    assert goals[(grid.GOALS[0][0], "bc5cdr", "systematic")] == "yes (so far, 2 seeds)"  # of 3
    assert goals[("recipe ≥ plain − 0.5 (ChatGPT-like)", "bc5cdr", "systematic")] == "yes (so far, 2 seeds)"
    assert goals[("recipe ≥ plain + 3 (weak, systematic)", "bc5cdr", "systematic")] == "yes (so far, 1 seed)"
    assert goals[("recipe ≥ plain − 0.5 (ChatGPT-like)", "bc5cdr", "random")] == "–"
    # cost: 0.5 s per label × 3,900 labels per run = 0.54 h; × 24 runs per recipe = 13 h
    cost = {cells(line)[0]: cells(line) for line in text.splitlines() if line.startswith("| plain |")}
    assert cost["plain"][2:] == ["0.50", "0.5", "13"]
    png = (results / "figures" / "converged-converged-bc5cdr.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_goal_that_is_not_met_says_so(results: Path) -> None:
    folder = grid.OUT_ROOT / "converged" / grid.run_name("bc5cdr", "weak", "systematic", "plain", 1)
    data = json.loads((folder / "results.json").read_text())
    data["rounds"][-1]["f1"] = 0.43  # recipe only +1 point over plain now
    (folder / "results.json").write_text(json.dumps(data))
    text = grid.report("converged", figures=results / "figures")
    line = next(x for x in text.splitlines() if x.startswith("| recipe ≥ plain + 3"))
    assert cells(line)[-1] == "no (so far, 1 seed)"


def test_a_block_reaches_the_first_stage_in_every_run_before_going_on(tmp_path: Path) -> None:
    staged = grid.staged_order(grid.DATASETS, grid.TEACHERS, grid.NOISE_KINDS, grid.RECIPES, grid.SEEDS, 500)
    assert len(staged) == 2 * 72
    first_block = [run for run, _ in staged[:6]]
    assert staged[:6] == [(run, 500) for run in first_block] and staged[6:12] == [(run, None) for run in first_block]
    assert {run[:3] for run in first_block} == {("bc5cdr", t, "systematic") for t in grid.TEACHERS}
    out = tmp_path / "run"
    out.mkdir()
    assert not grid.stage_done(out, 500)
    (out / "progress.json").write_text(json.dumps({"rounds": fake_rounds([0.3, 0.4, 0.5], 0.7)}))
    assert grid.stage_done(out, 500) and not grid.stage_done(out, None)


def test_a_run_trained_with_another_recipe_configuration_is_flagged_stale(results: Path) -> None:
    from dataclasses import asdict

    from training.trainer import TrainConfig

    folder = grid.OUT_ROOT / "converged" / grid.run_name("bc5cdr", "weak", "systematic", "plain", 1)
    data = json.loads((folder / "results.json").read_text())
    data["train_config"] = asdict(TrainConfig.from_recipe("plain", seed=1))
    (folder / "results.json").write_text(json.dumps(data))
    assert "Stale" not in grid.report("converged", figures=results / "figures")
    data["train_config"]["max_epochs"] += 1  # the recipe changed since this run
    (folder / "results.json").write_text(json.dumps(data))
    text = grid.report("converged", figures=results / "figures")
    assert "**Stale**" in text and "bc5cdr-weak-systematic-plain-s1" in text


def test_record_code_appends_the_commit(tmp_path: Path) -> None:
    grid.record_code(tmp_path)
    grid.record_code(tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "code.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and len(lines[0]["commit"]) == 40 and isinstance(lines[0]["dirty"], list)
