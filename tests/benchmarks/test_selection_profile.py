"""The round-1 selection profile: batch composition, and a clear skip when the grid has not run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import selection_profile, simulate_grid
from training.data import Example
from training.spans import Span


def test_batch_profile_counts_words_entities_and_overlap() -> None:
    batch = [Example("a", "Aspirin helps", [Span(0, 7, "Chemical")], ["Aspirin", "helps"]),
             Example("b", "no entity in here", [], ["no", "entity", "in", "here"])]
    p = selection_profile.batch_profile(batch, [True, False], reference={"a", "z"})
    assert p == {"words": 3.0, "entities": 0.5, "no_entity": 0.5, "teacher_wrong": 0.5, "overlap_lc": 0.5}
    assert math.isnan(selection_profile.batch_profile(batch, [False, False])["overlap_lc"])
    with pytest.raises(ValueError, match="empty batch"):
        selection_profile.batch_profile([], [])


def test_without_a_round0_cache_the_cell_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(simulate_grid, "OUT_ROOT", tmp_path)
    assert selection_profile.round1_batches("bc5cdr", "weak", 1, "cpu") is None
    assert selection_profile.main(["--datasets", "bc5cdr", "--teachers", "weak", "--seeds", "1"]) == 1
    assert "round 0 not in the cache" in capsys.readouterr().out


def test_table_is_a_mean_over_seeds() -> None:
    row = {"words": 10.0, "entities": 1.0, "no_entity": 0.2, "teacher_wrong": 0.5, "overlap_lc": 1.0}
    runs = [{"least_confidence": row}, {"least_confidence": {**row, "words": 20.0}}]
    text = selection_profile.table({("bc5cdr", "weak"): runs})
    assert "**bc5cdr, weak teacher** (2 seeds)" in text
    assert "| least_confidence | 15.00 | 1.00 | 0.20 | 0.50 | 1.00 |" in text
