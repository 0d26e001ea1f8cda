"""Hybrid strategies: uncertainty filtered by coverage, and the weighted greedy score."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.diversity import CoresetSampling
from acquisition.hybrid import HybridSampling, WeightedHybrid, kmeans_pp_seeding
from acquisition.random import RandomSampling
from acquisition.uncertainty import EntropySampling, LeastConfidence


def _row(lc: float) -> np.ndarray:
    """One word whose least-confidence score is `lc` (for lc < 2/3)."""
    return np.array([[1.0 - lc, lc / 2, lc / 2]])


@pytest.fixture
def three_clusters(make_pool, clustered):
    """Cluster 0 is the most uncertain, cluster 1 middling, cluster 2 confident; 10 items each."""
    x, cluster = clustered(n_clusters=3, per_cluster=10)
    rng = np.random.default_rng(0)
    base = {0: 0.55, 1: 0.40, 2: 0.25}
    lc = np.array([base[c] for c in cluster]) + rng.uniform(0, 0.05, size=cluster.size)
    marginals = [_row(v) for v in lc]
    return make_pool(marginals=marginals, embeddings=x), cluster, marginals, x


def test_plain_uncertainty_piles_into_one_cluster(three_clusters) -> None:
    pool, cluster, _, _ = three_clusters
    assert cluster[LeastConfidence().select(pool, 3)].tolist() == [0, 0, 0]


@pytest.mark.parametrize("diversity", ["kcenter", "kmeans++"])
def test_hybrid_spreads_the_batch_over_clusters(three_clusters, diversity: str) -> None:
    pool, cluster, _, _ = three_clusters
    picked = HybridSampling(beta=10, diversity=diversity).select(pool, 3, np.random.default_rng(0))
    assert sorted(cluster[picked].tolist()) == [0, 1, 2]


def test_hybrid_kcenter_starts_from_the_most_uncertain_item(three_clusters) -> None:
    pool, _, _, _ = three_clusters
    assert HybridSampling(beta=10).select(pool, 3)[0] == LeastConfidence().select(pool, 1)[0]


def test_hybrid_only_picks_among_the_top_beta_k_candidates(three_clusters) -> None:
    pool, _, _, _ = three_clusters
    top4 = set(LeastConfidence().select(pool, 4).tolist())
    for diversity in ("kcenter", "kmeans++"):
        assert set(HybridSampling(beta=2, diversity=diversity).select(pool, 2).tolist()) <= top4


def test_hybrid_with_beta_one_is_uncertainty_sampling(three_clusters) -> None:
    pool, _, _, _ = three_clusters
    hybrid = HybridSampling(beta=1).select(pool, 5)
    assert set(hybrid.tolist()) == set(LeastConfidence().select(pool, 5).tolist())


def test_hybrid_seeded_from_the_labeled_set_goes_where_nothing_is_labeled(three_clusters, make_pool) -> None:
    _, cluster, marginals, x = three_clusters
    pool = make_pool(marginals=marginals, embeddings=x, labeled_embeddings=x[cluster != 2][::3])
    for diversity in ("kcenter", "kmeans++"):
        picked = HybridSampling(beta=30, diversity=diversity).select(pool, 1, np.random.default_rng(0))
        assert cluster[picked].tolist() == [2]


def test_hybrid_uses_the_given_uncertainty_strategy(three_clusters) -> None:
    pool, _, _, _ = three_clusters
    h = HybridSampling(uncertainty="entropy")
    assert isinstance(h.uncertainty, EntropySampling)
    assert h.scores(pool) == pytest.approx(EntropySampling().scores(pool))


def test_weighted_hybrid_spreads_where_uncertainty_alone_would_not(three_clusters) -> None:
    pool, cluster, _, _ = three_clusters
    picked = WeightedHybrid(lam=0.3).select(pool, 3)
    assert cluster[picked].tolist() == [0, 1, 2]
    assert WeightedHybrid(lam=0.3).scores(pool).argmax() == picked[0]


def test_weighted_hybrid_lam_one_is_uncertainty_sampling(three_clusters) -> None:
    pool, _, _, _ = three_clusters
    assert WeightedHybrid(lam=1.0).select(pool, 7).tolist() == LeastConfidence().select(pool, 7).tolist()


def test_weighted_hybrid_lam_zero_is_coreset_from_the_labeled_set(three_clusters, make_pool) -> None:
    _, cluster, marginals, x = three_clusters
    pool = make_pool(marginals=marginals, embeddings=x, labeled_embeddings=x[cluster == 0][:2])
    assert WeightedHybrid(lam=0.0).select(pool, 6).tolist() == CoresetSampling().select(pool, 6).tolist()
    s = WeightedHybrid(lam=0.0).scores(pool)
    assert s.min() == 0.0 and s.max() == 1.0


def test_kmeans_pp_seeding_is_unique_even_on_duplicates() -> None:
    x = np.zeros((5, 2))
    got = kmeans_pp_seeding(x, 5, np.random.default_rng(0))
    assert sorted(got.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        kmeans_pp_seeding(x, 0, np.random.default_rng(0))


def test_kmeans_pp_seeding_never_redraws_a_chosen_point_with_rounding_residue() -> None:
    # For this vector ||v||² − 2 v·v + ||v||² is 1.1e-16, not 0: a chosen copy keeps a tiny weight.
    v = [0.1257302210933933, -0.1321048632913019, 0.6404226504432821]
    x = np.array([v] * 3)
    for seed in range(20):
        assert sorted(kmeans_pp_seeding(x, 3, np.random.default_rng(seed)).tolist()) == [0, 1, 2]


def test_kmeans_pp_seeding_depends_on_the_rng() -> None:
    x = np.random.default_rng(0).standard_normal((200, 3))
    runs = {tuple(kmeans_pp_seeding(x, 5, np.random.default_rng(s)).tolist()) for s in range(5)}
    assert len(runs) > 1
    assert kmeans_pp_seeding(x, 5, np.random.default_rng(3)).tolist() == (
        kmeans_pp_seeding(x, 5, np.random.default_rng(3)).tolist()
    )


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="beta"):
        HybridSampling(beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        HybridSampling(beta=float("nan"))
    with pytest.raises(ValueError, match="kcenter, kmeans\\+\\+"):
        HybridSampling(diversity="badge")
    with pytest.raises(ValueError, match="entropy, least_confidence, mnlp"):
        HybridSampling(uncertainty="margin")
    with pytest.raises(TypeError):
        HybridSampling(uncertainty=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lam"):
        WeightedHybrid(lam=1.5)


def test_an_order_free_strategy_cannot_drive_a_hybrid(three_clusters) -> None:
    pool, _, _, _ = three_clusters
    with pytest.raises(ValueError, match="no per-item scores"):
        HybridSampling(uncertainty=RandomSampling()).select(pool, 2)
