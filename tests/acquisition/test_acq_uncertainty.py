"""Entropy, least confidence and MNLP on hand-made marginals with known answers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.base import PoolData
from acquisition.uncertainty import (
    MNLP,
    EntropySampling,
    LeastConfidence,
    aggregate,
    token_scores,
    token_uncertainty,
)

CONFIDENT = np.array([[0.98, 0.01, 0.01], [0.97, 0.02, 0.01]])
UNIFORM = np.full((2, 3), 1 / 3)
# Entropy and least confidence disagree on these two one-word sentences:
# A: LC 0.5, H ln2 = 0.693, -log max = 0.693;  B: LC 0.4, H 0.950, -log max = 0.511.
A = np.array([[0.5, 0.5, 0.0]])
B = np.array([[0.6, 0.2, 0.2]])


def test_token_scores_known_values() -> None:
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert token_scores(p, "entropy") == pytest.approx([0.0, math.log(3), math.log(2)])
    assert token_scores(p, "least_confidence") == pytest.approx([0.0, 2 / 3, 0.5])
    assert token_scores(p, "neg_log_max") == pytest.approx([0.0, math.log(3), math.log(2)])
    assert not np.any(np.isnan(token_scores(p, "entropy")))  # 0 log 0 = 0
    with pytest.raises(ValueError, match="valid: entropy, least_confidence, neg_log_max"):
        token_scores(p, "margin")  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", [EntropySampling(), LeastConfidence(), MNLP()])
def test_most_uncertain_sentence_is_chosen_first(strategy, make_pool) -> None:
    pool = make_pool([CONFIDENT, UNIFORM, CONFIDENT[:1]])
    order = strategy.select(pool, 3)
    assert order[0] == 1
    assert strategy.scores(pool).argmax() == 1


def test_entropy_lc_and_mnlp_rank_a_and_b_differently(make_pool) -> None:
    pool = make_pool([A, B])
    assert EntropySampling().select(pool, 2).tolist() == [1, 0]  # B spreads mass over 3 labels
    assert LeastConfidence().select(pool, 2).tolist() == [0, 1]  # A's best label is less sure
    assert MNLP().select(pool, 2).tolist() == [0, 1]
    assert MNLP().scores(pool) == pytest.approx([math.log(2), -math.log(0.6)])


def test_aggregation_changes_the_winner(make_pool) -> None:
    confident = [0.99, 0.005, 0.005]
    # X: one maximally unsure word among nine confident ones; Y: three moderately unsure words;
    # Z: twenty mildly unsure words.
    x = np.array([[1 / 3, 1 / 3, 1 / 3]] + [confident] * 9)
    y = np.array([[0.6, 0.3, 0.1]] * 3)
    z = np.array([[0.9, 0.05, 0.05]] * 20)
    pool = make_pool([x, y, z])
    assert LeastConfidence("mean").select(pool, 1)[0] == 1  # y: 0.4 vs x: 0.076 vs z: 0.1
    assert LeastConfidence("max").select(pool, 1)[0] == 0  # x: 0.667
    assert LeastConfidence("sum").select(pool, 1)[0] == 2  # z: 2.0 vs x: 0.757, y: 1.2
    lc = token_uncertainty(pool, "least_confidence", "sum")
    assert lc == pytest.approx([2 / 3 + 9 * 0.01, 1.2, 2.0])


def test_mnlp_is_negative_length_normalised_greedy_log_probability(make_pool) -> None:
    s = np.array([[0.5, 0.3, 0.2], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2]])
    pool = make_pool([s])
    expected = -(math.log(0.5) + math.log(0.8) + math.log(0.7)) / 3
    assert MNLP().scores(pool) == pytest.approx([expected])
    assert MNLP("sum").scores(pool) == pytest.approx([3 * expected])
    assert MNLP("max").scores(pool) == pytest.approx([-math.log(0.5)])


def test_empty_sentences_score_zero_under_every_kind_and_aggregation(make_pool) -> None:
    empty = np.zeros((0, 3))
    pool = make_pool([empty, UNIFORM, empty, empty])
    for kind in ("entropy", "least_confidence", "neg_log_max"):
        for agg in ("mean", "max", "sum"):
            scores = token_uncertainty(pool, kind, agg)
            assert scores[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
            assert scores[1] > 0
    only_empty = make_pool([empty, empty])
    assert LeastConfidence().select(only_empty, 2).tolist() == [0, 1]
    assert token_uncertainty([], "entropy").shape == (0,)


def test_ties_go_to_the_lower_index(make_pool) -> None:
    pool = make_pool([CONFIDENT, UNIFORM, CONFIDENT, UNIFORM])
    assert EntropySampling().select(pool, 4).tolist() == [1, 3, 0, 2]


def test_token_uncertainty_accepts_a_plain_list() -> None:
    assert token_uncertainty([A, B], "least_confidence") == pytest.approx([0.5, 0.4])


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="valid: mean, max, sum"):
        LeastConfidence("median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lengths sum"):
        aggregate(np.ones(3), np.array([1, 1]), "mean")


def _reference(marginals: list[np.ndarray], kind: str, agg: str) -> list[float]:
    """The obvious per-sentence loop the vectorised version must match."""
    out = []
    for m in marginals:
        if m.shape[0] == 0:
            out.append(0.0)
            continue
        if kind == "entropy":
            t = [-sum(p * math.log(p) for p in row if p > 0) for row in m]
        elif kind == "least_confidence":
            t = [1 - max(row) for row in m]
        else:
            t = [-math.log(max(row)) for row in m]
        out.append({"mean": sum(t) / len(t), "max": max(t), "sum": sum(t)}[agg])
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 12),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["entropy", "least_confidence", "neg_log_max"]),
    agg=st.sampled_from(["mean", "max", "sum"]),
)
def test_vectorised_scores_match_a_per_sentence_loop(
    random_marg: Callable[..., list[np.ndarray]], n: int, seed: int, kind: str, agg: str
) -> None:
    marginals = random_marg(n, seed=seed)
    got = token_uncertainty(marginals, kind, agg)  # type: ignore[arg-type]
    assert got == pytest.approx(_reference(marginals, kind, agg), abs=1e-9)


def test_float32_marginals_give_finite_scores(make_pool) -> None:
    p = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    pool = make_pool([p])
    for kind in ("entropy", "least_confidence", "neg_log_max"):
        assert np.isfinite(token_uncertainty(pool, kind)).all()


def test_flat_marginals_are_concatenated_once() -> None:
    pool = PoolData(ids=["a", "b"], marginals=[A, B])
    assert pool.flat_marginals is pool.flat_marginals
