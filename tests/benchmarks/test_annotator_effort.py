"""The effort benchmark's own arithmetic: edits against what was shown, and the issue 11 goals."""

from __future__ import annotations

from benchmarks.annotator_effort import RoundFigures, check_goals, edits
from training.spans import Span


def test_edits_count_a_boundary_or_label_fix_as_one_change_not_a_delete_and_an_add() -> None:
    gold = [Span(0, 7, "Chemical"), Span(15, 26, "Disease"), Span(30, 34, "Chemical")]
    shown = [Span(0, 7, "Chemical"), Span(15, 20, "Disease"), Span(40, 45, "Disease")]
    # kept: 0-7; changed: 15-20 -> 15-26; deleted: 40-45; added: 30-34
    assert edits(shown, gold) == (1, 1, 1)
    assert edits([], gold) == (3, 0, 0)
    assert edits(gold, gold) == (0, 0, 0)
    assert edits([Span(0, 7, "Disease")], [Span(0, 7, "Chemical")]) == (0, 0, 1)


def _round(n: int, share: float, edits_per_task: float) -> RoundFigures:
    return RoundFigures(n, 25, int(share * 25), share, 0, 0, 0, edits_per_task, None, "", None, None, None, None,
                        None, "llm", 0, 0, 0.0, None)


def test_goals_need_prelabels_everywhere_falling_edits_and_no_drop() -> None:
    good = [_round(1, 1.0, 2.0), _round(2, 1.0, 1.5), _round(3, 1.0, 1.0)]
    assert all(check_goals(good).values())
    dropped = [_round(1, 1.0, 2.0), _round(2, 0.8, 1.5), _round(3, 0.8, 1.0)]
    goals = check_goals(dropped)
    assert not goals["prelabels_ge_99pct_every_round"] and not goals["prelabelled_never_falls"]
    assert not check_goals([_round(1, 1.0, 1.0), _round(2, 1.0, 1.2)])["edits_fall_first_to_last"]
