"""The prompt grid: finished cells are skipped (no endpoint needed), and the table reads their results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import prompt_grid as grid


def fake_result(f1: float) -> dict[str, object]:
    return {"f1": f1, "precision": f1, "recall": f1, "failed": 2, "n": 200, "f1_failed_as_empty": f1 - 0.01,
            "latency_s": {"p50": 2.5}, "tokens": {"prompt_mean": 600.0, "completion_mean": 30.0}, "seconds": 500.0,
            "config": {"split": "dev", "seed": 0, "model": "gemma-3-270m-q4_k_m", "template": "ner.v2@abc"}}


def test_a_grid_with_every_cell_done_runs_nothing_and_reports_them(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for i, cell in enumerate(grid.CELLS):
        (tmp_path / "bc5cdr" / cell.name).mkdir(parents=True)
        f1 = 0.40 if cell.name == "base" else 0.30 - 0.01 * i
        (tmp_path / "bc5cdr" / cell.name / "results.json").write_text(json.dumps(fake_result(f1)))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    # No endpoint and no server: only possible because every cell is skipped.
    assert grid.main(["--datasets", "bc5cdr", "--out", str(tmp_path), "--base-url", ""]) == 0
    table = (tmp_path / "README.md").read_text()
    assert table.count("| 2/200 |") == len(grid.CELLS)
    assert "| base | base: k-NN demos, k=5, label hints, JSON schema | 0.400 |" in table
    assert "k-NN vs random demonstrations: +11.0 F1" in table  # random is cell 1: 0.30 - 0.01



def test_a_run_on_one_dataset_keeps_the_other_datasets_rows_in_the_table(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for ds, f1 in (("bc5cdr", 0.45), ("conll2003", 0.55)):
        (tmp_path / ds / "base").mkdir(parents=True)
        (tmp_path / ds / "base" / "results.json").write_text(json.dumps(fake_result(f1)))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert grid.main(["--datasets", "conll2003", "--cells", "base", "--out", str(tmp_path), "--base-url", ""]) == 0
    table = (tmp_path / "README.md").read_text()
    assert "## bc5cdr" in table and "## conll2003" in table
    assert "| 0.450 |" in table and "| 0.550 |" in table

def test_cells_vary_one_factor_from_the_base() -> None:
    base = grid.CELLS[0]
    for cell in grid.CELLS[1:]:
        diffs = [f for f in ("demos", "k", "hints", "json_schema") if getattr(cell, f) != getattr(base, f)]
        assert len(diffs) == 1 or (cell.demos == "none" and set(diffs) == {"demos", "k"})


def test_a_cell_whose_every_call_failed_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed local server fails every call: that is a dead endpoint, not a cell with F1 0."""
    import llmaaa.llm_eval as llm_eval

    monkeypatch.setattr(llm_eval, "run_eval", lambda cfg: {**fake_result(0.0), "failed": 200})
    with pytest.raises(SystemExit, match="every one of 200 calls failed"):
        grid.main(["--datasets", "bc5cdr", "--cells", "base", "--out", str(tmp_path),
                   "--base-url", "http://127.0.0.1:9/v1"])
    assert not (tmp_path / "bc5cdr" / "base" / "results.json").exists()
