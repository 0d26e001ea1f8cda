"""The real-teacher loop's report: read from finished runs, the goal's gap computed from them."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.real_teacher_loop import load_runs, report


def write_run(out: Path, recipe: str, seed: int, teacher_f1: float, student_f1s: list[float]) -> None:
    d = out / "bc5cdr" / f"{recipe}-seed{seed}"
    d.mkdir(parents=True)
    rounds = [{"labels": b, "f1": f, "cpu_seconds": 10.0} for b, f in zip([100, 300, 500], student_f1s, strict=True)]
    d.joinpath("results.json").write_text(json.dumps({
        "teacher": {"f1": teacher_f1, "not_annotated": 7, "calls": 507}, "rounds": rounds,
        "final": {"f1": student_f1s[-1]}, "config": {"strategy": "least_confidence", "budgets": [100, 300, 500]},
        "gold_size": 100,
        "test_size": 1000, "pool_size": 4560}))


def test_report_gives_each_run_and_the_mean_gap_to_the_teacher(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", 1, 0.40, [0.30, 0.45, 0.52])
    write_run(tmp_path, "plain", 2, 0.42, [0.31, 0.44, 0.50])
    write_run(tmp_path, "recipe", 1, 0.40, [0.30, 0.46, 0.55])
    (tmp_path / "bc5cdr" / "recipe-seed2").mkdir()  # unfinished: no results.json yet
    assert set(load_runs(tmp_path, "bc5cdr")) == {("plain", 1), ("plain", 2), ("recipe", 1)}
    text = report(tmp_path, "bc5cdr")
    assert "| plain | 1 | 0.400 | 7 | 0.300 | 0.450 | 0.520 | +12.0 | 30 | 507 |" in text
    assert "plain +10.0 over 2 seed(s)" in text and "recipe +15.0 over 1 seed(s)" in text
    assert "student F1 @500 calls" in text


def test_the_gold_only_reference_is_compared_with_its_seeds_teacher(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", 1, 0.40, [0.30, 0.45, 0.52])
    d = tmp_path / "bc5cdr" / "gold_only-seed1"
    d.mkdir(parents=True)
    d.joinpath("results.json").write_text(json.dumps({
        "teacher": {"f1": None, "labels": 0}, "rounds": [{"labels": 0, "gold": 100, "f1": 0.47}],
        "final": {"f1": 0.47}, "config": {"strategy": "least_confidence", "budgets": [100, 300, 500]}}))
    text = report(tmp_path, "bc5cdr")
    assert "| gold_only (no LLM labels) | 1 | - | - | - | - | 0.470 | +7.0 | 0 | 0 |" in text
    assert "gold_only" not in text.split("Mean student")[1]  # the goal is about students of LLM labels


def test_report_without_runs_says_so(tmp_path: Path) -> None:
    assert "No run has finished yet." in report(tmp_path, "bc5cdr")


def test_gold_only_is_compared_with_the_mean_of_its_seeds_teachers_whatever_the_order(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", 1, 0.40, [0.30, 0.45, 0.52])
    write_run(tmp_path, "recipe", 1, 0.50, [0.30, 0.46, 0.55])
    d = tmp_path / "bc5cdr" / "gold_only-seed1"
    d.mkdir(parents=True)
    d.joinpath("results.json").write_text(json.dumps({
        "teacher": {"f1": None, "labels": 0}, "rounds": [{"labels": 0, "gold": 100, "f1": 0.47}],
        "final": {"f1": 0.47}, "config": {"strategy": "least_confidence", "budgets": [100, 300, 500]}}))
    assert "| gold_only (no LLM labels) | 1 | - | - | - | - | 0.470 | +2.0 | 0 | 0 |" in report(tmp_path, "bc5cdr")
