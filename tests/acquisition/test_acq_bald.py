"""BALD over MC-dropout passes, the density hybrid, and what each strategy says it needs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import acquisition.bald as bald_mod
from acquisition.bald import BALD, bald_scores, bald_token_scores
from acquisition.base import MissingPoolDataError, PoolData
from acquisition.hybrid import DensityHybrid, HybridSampling, entity_density
from acquisition.strategies import get_strategy
from acquisition.suspect import SuspectMix

LOG2 = float(np.log(2.0))


def test_bald_is_zero_when_passes_agree_and_log2_when_two_confident_passes_disagree() -> None:
    agree = np.tile([[[0.7, 0.2, 0.1]]], (4, 1, 1))
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert bald_token_scores(agree) == pytest.approx([0.0], abs=1e-12)
    assert bald_token_scores(disagree) == pytest.approx([LOG2])
    # The same mean distribution as `disagree`, from two uncertain passes: all entropy, no disagreement.
    assert bald_token_scores(np.full((2, 1, 2), 0.5)) == pytest.approx([0.0], abs=1e-12)


def test_bald_aggregations_and_empty_sentences() -> None:
    # Sentence 0: words with BALD log2 and 0; sentence 1: no words.
    s0 = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    mc = [s0, np.zeros((2, 0, 2))]
    assert bald_scores(mc, "mean") == pytest.approx([LOG2 / 2, 0.0])
    assert bald_scores(mc, "sum") == pytest.approx([LOG2, 0.0])
    assert bald_scores(mc, "max") == pytest.approx([LOG2, 0.0])
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        BALD(aggregation="median")  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 5), min_size=1, max_size=12), seed=st.integers(0, 999),
       chunk=st.integers(1, 7), agg=st.sampled_from(["mean", "max", "sum"]))
def test_chunked_bald_equals_a_per_sentence_loop(lengths: list[int], seed: int, chunk: int, agg: str) -> None:
    rng = np.random.default_rng(seed)
    mc = [rng.dirichlet(np.ones(4), size=(3, m)) for m in lengths]
    old = bald_mod._CHUNK_WORDS
    bald_mod._CHUNK_WORDS = chunk  # small chunks: sentences straddle chunk boundaries
    try:
        got = bald_scores(mc, agg)  # type: ignore[arg-type]
    finally:
        bald_mod._CHUNK_WORDS = old
    reduce = {"mean": np.mean, "max": np.max, "sum": np.sum}[agg]
    want = [float(reduce(bald_token_scores(m))) if m.shape[1] else 0.0 for m in mc]
    assert got == pytest.approx(want, abs=1e-12)
    assert np.all(got >= 0.0)


def test_bald_picks_the_sentence_whose_passes_disagree() -> None:
    sure = np.tile([[[0.9, 0.05, 0.05]]], (3, 2, 1))  # (3 passes, 2 words, 3 labels), all agree
    torn = np.array([[[0.9, 0.05, 0.05]], [[0.05, 0.9, 0.05]], [[0.05, 0.05, 0.9]]])
    # Uncertain but consistent: high entropy, yet no disagreement between passes.
    flat = np.full((3, 1, 3), 1 / 3)
    pool = PoolData(ids=["sure", "flat", "torn"], mc_marginals=[sure, flat, torn])
    assert BALD().select(pool, 1).tolist() == [2]
    assert get_strategy("entropy").select(
        PoolData(ids=["sure", "flat", "torn"], marginals=[m.mean(axis=0) for m in (sure, flat, torn)]), 1
    ).tolist() == [1]


def test_bald_needs_mc_marginals() -> None:
    with pytest.raises(MissingPoolDataError, match="mc_marginals"):
        BALD().select(PoolData(ids=["a"], marginals=[np.array([[0.5, 0.5]])]), 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mc_marginals": [np.full((1, 2, 2), 0.5)]}, "at least 2 passes"),
        ({"mc_marginals": [np.full((2, 2, 2), 0.5), np.full((3, 1, 2), 0.5)]}, "has 3 passes, earlier"),
        ({"mc_marginals": [np.full((2, 2), 0.5)]}, "must be 3-D"),
        ({"mc_marginals": [np.full((2, 2, 2), 2.0)]}, "probabilities in"),
        ({"mc_marginals": [np.full((2, 2, 2), 0.3)]}, "must sum to 1"),
        ({"mc_marginals": [np.full((2, 3, 2), 0.5)], "marginals": [np.full((2, 2), 0.5)]},
         r"has 3 words but marginals\[0\] has 2"),
        ({"mc_marginals": [np.full((2, 2, 4), 0.25)], "marginals": [np.full((2, 2), 0.5)]},
         "4 labels but marginals have 2"),
    ],
)
def test_mc_marginals_are_validated(kwargs: dict, message: str) -> None:
    n = len(kwargs["mc_marginals"])
    with pytest.raises(ValueError, match=message):
        PoolData(ids=[str(i) for i in range(n)], **kwargs)


def test_mc_marginals_count_must_match_ids() -> None:
    with pytest.raises(ValueError, match="mc_marginals has 1 sentences but there are 2 ids"):
        PoolData(ids=["a", "b"], mc_marginals=[np.full((2, 1, 2), 0.5)])


# ------------------------------------------------------------------------------------- density hybrid
def _rows(p: list[float], n_words: int = 3) -> np.ndarray:
    return np.tile([p], (n_words, 1))


def test_entity_density_is_the_mean_non_o_probability() -> None:
    pool = PoolData(ids=["a", "b", "c"], marginals=[np.array([[0.2, 0.8], [0.6, 0.4]]), np.zeros((0, 2)),
                                                    np.array([[1.0, 0.0]])])
    assert entity_density(pool) == pytest.approx([0.6, 0.0, 0.0])
    mc_only = PoolData(ids=["a"], mc_marginals=[np.array([[[0.2, 0.8]], [[0.4, 0.6]]])])
    assert entity_density(mc_only) == pytest.approx([0.7])


def test_density_hybrid_prefers_entity_dense_sentences_at_equal_uncertainty() -> None:
    # Least confidence is 0.4 for both kinds; the sparse ones (lower indices, so they win LC's ties)
    # put their doubt between O and a tag, the dense ones between two entity tags.
    sparse, dense = _rows([0.6, 0.2, 0.2]), _rows([0.2, 0.6, 0.2])
    pool = PoolData(ids=[str(i) for i in range(4)], marginals=[sparse, sparse, dense, dense],
                    embeddings=np.eye(4))
    assert get_strategy("least_confidence").select(pool, 1).tolist() == [0]
    assert DensityHybrid().select(pool, 1).tolist() == [2]
    assert DensityHybrid(density_power=0.0).select(pool, 1).tolist() == [0]  # no density: plain LC weight
    assert DensityHybrid().scores(pool) == pytest.approx([0.4 * 0.4, 0.4 * 0.4, 0.4 * 0.8, 0.4 * 0.8])


def test_density_hybrid_spreads_over_clusters_and_skips_the_covered_one(clustered) -> None:  # noqa: ANN001
    x, cid = clustered(n_clusters=4, per_cluster=10, d=4)
    rng = np.random.default_rng(0)
    marg = [_rows(list(rng.dirichlet(np.ones(3) * 2))) for _ in range(x.shape[0])]
    pool = PoolData(ids=[str(i) for i in range(len(x))], marginals=marg, embeddings=x)
    covered = PoolData(ids=pool.ids, marginals=marg, embeddings=x, labeled_embeddings=x[cid == 0][:1])
    s = DensityHybrid(beta=100)
    for seed in range(10):
        assert sorted(cid[s.select(pool, 4, seed)].tolist()) == [0, 1, 2, 3]
        assert sorted(cid[s.select(covered, 3, seed)].tolist()) == [1, 2, 3]
    # Without a labeled set the first pick is the item with the highest weight.
    assert s.select(pool, 4, 0)[0] == int(np.argmax(s.scores(pool)))


def test_density_hybrid_options_are_checked() -> None:
    with pytest.raises(ValueError, match="beta"):
        DensityHybrid(beta=0.5)
    with pytest.raises(ValueError, match="density_power"):
        DensityHybrid(density_power=-1)
    with pytest.raises(ValueError, match="aggregation applies to an uncertainty given by name"):
        HybridSampling(uncertainty=get_strategy("mnlp"), aggregation="sum")
    assert HybridSampling(uncertainty="mnlp", aggregation="sum").uncertainty.aggregation == "sum"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ needs_*
@pytest.mark.parametrize(
    ("strategy", "marginals", "mc", "embeddings", "student"),
    [
        (get_strategy("random"), False, False, False, False),
        (get_strategy("least_confidence"), True, False, False, True),
        (get_strategy("kmeans"), False, False, True, False),
        (get_strategy("coreset"), False, False, True, False),
        (get_strategy("hybrid"), True, False, True, True),
        (get_strategy("weighted_hybrid"), True, False, True, True),
        (get_strategy("bald"), False, True, False, True),
        (get_strategy("density_hybrid"), True, False, True, True),
        (DensityHybrid(uncertainty="bald"), False, True, True, True),
        (HybridSampling(uncertainty="bald"), False, True, True, True),
        (SuspectMix(get_strategy("kmeans")), False, False, True, False),
    ],
)
def test_strategies_say_what_they_need(strategy, marginals: bool, mc: bool, embeddings: bool,  # noqa: ANN001
                                       student: bool) -> None:
    assert (strategy.needs_marginals, strategy.needs_mc_marginals, strategy.needs_embeddings,
            strategy.needs_student) == (marginals, mc, embeddings, student)


def test_what_a_strategy_needs_is_what_it_reads() -> None:
    """A strategy that says it does not need a field must run without it."""
    rng = np.random.default_rng(0)
    full = {"marginals": [rng.dirichlet(np.ones(3), size=3) for _ in range(6)],
            "mc_marginals": [rng.dirichlet(np.ones(3), size=(2, 3)) for _ in range(6)],
            "embeddings": rng.standard_normal((6, 2))}
    for name in ("random", "least_confidence", "kmeans", "hybrid", "bald", "density_hybrid"):
        s = get_strategy(name)
        needs = {"marginals": s.needs_marginals, "mc_marginals": s.needs_mc_marginals,
                 "embeddings": s.needs_embeddings}
        given_fields = {k: v for k, v in full.items() if needs[k]}
        assert s.select(PoolData(ids=[str(i) for i in range(6)], **given_fields), 2).size == 2, name
