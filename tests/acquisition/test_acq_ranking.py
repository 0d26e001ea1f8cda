"""rank_scores: Label Studio serves ascending scores, so the first selected item gets the lowest value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.ranking import rank_scores


def test_selected_items_come_first_in_order() -> None:
    s = rank_scores(np.array([3, 1]), 5)
    assert s.tolist() == pytest.approx([0.5, 0.25, 0.75, 0.0, 1.0])


def test_tail_scores_order_the_unselected_items() -> None:
    s = rank_scores(np.array([3]), 4, tail_scores=np.array([0.1, 0.9, 0.5, 0.0]))
    assert np.argsort(s).tolist() == [3, 1, 2, 0]


def test_edge_sizes() -> None:
    assert rank_scores(np.array([0]), 1).tolist() == [0.0]
    assert rank_scores(np.array([], dtype=int), 0).shape == (0,)
    assert rank_scores(np.array([], dtype=int), 3).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("order", "n", "kwargs"),
    [
        ([0, 0], 3, {}),
        ([3], 3, {}),
        ([-1], 3, {}),
        ([0], -1, {}),
        ([0], 2, {"tail_scores": np.array([np.nan, 1])}),
        ([0], 2, {"tail_scores": np.ones(3)}),
    ],
)
def test_bad_input(order: list[int], n: int, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        rank_scores(np.array(order, dtype=int), n, **kwargs)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(1, 60))
def test_unique_in_unit_interval_selected_below_unselected(data: st.DataObject, n: int) -> None:
    order = np.array(data.draw(st.permutations(range(n)))[: data.draw(st.integers(0, n))], dtype=int)
    s = rank_scores(order, n)
    assert s.shape == (n,) and not np.isnan(s).any()
    assert np.unique(s).size == n and s.min() >= 0.0 and s.max() <= 1.0
    assert np.all(np.diff(s[order]) > 0)  # served in selection order
    rest = np.setdiff1d(np.arange(n), order)
    if order.size and rest.size:
        assert s[order].max() < s[rest].min()
