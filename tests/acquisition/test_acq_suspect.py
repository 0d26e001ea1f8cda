"""Suspect mixing: likely-wrong LLM labels reach a human early, at a fixed share of the slots."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.suspect import SuspectMix, mix_suspects, suspect_stream
from acquisition.uncertainty import LeastConfidence


def test_suspect_stream_is_most_suspect_first_above_the_threshold() -> None:
    s = np.array([0.2, 0.9, 0.5, 0.7, 0.9, 0.49])
    assert suspect_stream(s).tolist() == [1, 4, 3, 2]
    assert suspect_stream(s, min_score=0.8).tolist() == [1, 4]
    with pytest.raises(ValueError):
        suspect_stream(np.array([np.nan]))


def test_a_quarter_of_the_slots_go_to_suspects_evenly_spread() -> None:
    order = np.arange(8)  # acquisition stream 0..7
    scores = np.zeros(12)
    scores[8:] = [0.6, 0.9, 0.8, 0.7]  # suspect stream: 9, 10, 11, 8
    got = mix_suspects(order, scores, 0.25)
    assert got.tolist() == [0, 1, 2, 9, 3, 4, 5, 10, 6, 7, 11, 8]  # suspects at 3, 7; then the rest


@pytest.mark.parametrize("fraction", [0.1, 0.25, 1 / 3, 0.5, 0.9])
def test_every_prefix_holds_floor_of_fraction_suspects(fraction: float) -> None:
    order = np.arange(40)
    scores = np.r_[np.zeros(40), np.linspace(0.6, 1.0, 40)]
    got = mix_suspects(order, scores, fraction)
    is_suspect = got >= 40
    for length in range(1, 41):
        assert is_suspect[:length].sum() == int(np.floor(length * fraction))


def test_fraction_zero_and_one_are_the_two_streams_back_to_back() -> None:
    order = np.array([3, 0, 1])
    scores = np.array([0.0, 0.0, 0.0, 0.0, 0.9, 0.6])
    assert mix_suspects(order, scores, 0.0).tolist() == [3, 0, 1, 4, 5]
    assert mix_suspects(order, scores, 1.0).tolist() == [4, 5, 3, 0, 1]


def test_an_item_in_both_streams_appears_once_at_its_earlier_slot() -> None:
    order = np.array([5, 0, 1, 2])
    scores = np.array([0.0, 0.0, 0.0, 0.0, 0.7, 0.9])  # 5 is selected and also the top suspect
    got = mix_suspects(order, scores, 0.5)
    # Slot 0 is an acquisition slot (5); slot 1 is a suspect slot: 5 is already placed, so 4 takes it.
    assert got.tolist() == [5, 4, 0, 1, 2]
    assert np.unique(got).size == got.size


def test_no_suspects_leaves_the_order_unchanged() -> None:
    order = np.array([2, 0, 1])
    assert mix_suspects(order, np.array([0.1, 0.2, 0.3]), 0.5).tolist() == [2, 0, 1]


@pytest.mark.parametrize("fraction", [-0.1, 1.1, float("nan")])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        mix_suspects(np.array([0]), np.zeros(1), fraction)


def test_bad_order() -> None:
    with pytest.raises(ValueError, match="unique"):
        mix_suspects(np.array([0, 0]), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match="index"):
        mix_suspects(np.array([3]), np.zeros(2), 0.5)


def test_suspect_mix_strategy_keeps_the_batch_size(make_pool) -> None:
    marginals = [np.array([[1 - v, v / 2, v / 2]]) for v in (0.1, 0.5, 0.3, 0.2, 0.0, 0.05)]
    suspects = np.array([0.0, 0.0, 0.0, 0.0, 0.95, 0.0])  # item 4 is the least uncertain, but suspect
    pool = make_pool(marginals=marginals, suspect_scores=suspects)
    base = LeastConfidence().select(pool, 4)
    assert base.tolist() == [1, 2, 3, 0]
    mixed = SuspectMix(LeastConfidence(), fraction=0.5).select(pool, 4)
    assert mixed.tolist() == [1, 4, 2, 3]
    assert SuspectMix(LeastConfidence()).name == "least_confidence+suspects"
    no_scores = make_pool(marginals=marginals)
    assert SuspectMix(LeastConfidence(), 0.5).select(no_scores, 4).tolist() == base.tolist()
    with pytest.raises(TypeError):
        SuspectMix("least_confidence")  # type: ignore[arg-type]
