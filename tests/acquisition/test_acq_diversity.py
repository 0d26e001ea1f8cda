"""K-means and coreset on well-separated clusters; the distance helpers against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.diversity import CoresetSampling, KMeansSampling, greedy_k_center, min_sq_distances


def _brute_min_sq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1).min(1)


@pytest.mark.parametrize("block_entries", [1, 7, 50, 8_000_000])
def test_min_sq_distances_matches_brute_force_for_any_block_size(block_entries: int) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((23, 4)), rng.standard_normal((11, 4))
    got = min_sq_distances(x, y, block_entries=block_entries)
    assert got == pytest.approx(_brute_min_sq(x, y))
    assert np.isinf(min_sq_distances(x, np.zeros((0, 4)))).all()


def test_greedy_k_center_is_farthest_first_on_a_line() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    # Starts at the point nearest the mean (4.8 -> 2.0), then 11 (farthest), then 0, then 10 vs 1...
    assert greedy_k_center(x, 3).tolist() == [2, 4, 0]
    assert greedy_k_center(x, 2, first=0).tolist() == [0, 4]
    init = _brute_min_sq(x, np.array([[0.0], [10.0]]))
    # From labeled {0, 10}: 2 is farthest (2 away); then 1 and 11 tie at 1 and the lower index wins.
    assert greedy_k_center(x, 2, init_sq_dist=init).tolist() == [2, 1]
    with pytest.raises(ValueError):
        greedy_k_center(x, 6)


def test_greedy_k_center_never_repeats_on_duplicate_points() -> None:
    x = np.zeros((4, 2))
    assert sorted(greedy_k_center(x, 4).tolist()) == [0, 1, 2, 3]
    init = np.zeros(4)
    assert sorted(greedy_k_center(x, 4, init_sq_dist=init).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "strategy",
    [KMeansSampling(), KMeansSampling(minibatch_threshold=10), CoresetSampling(), CoresetSampling("random")],
    ids=["kmeans", "minibatch-kmeans", "coreset", "coreset-random-start"],
)
def test_one_pick_per_well_separated_cluster(strategy, make_pool, clustered) -> None:
    x, cluster = clustered(n_clusters=5, per_cluster=20)
    pool = make_pool(embeddings=x)
    picked = strategy.select(pool, 5, np.random.default_rng(1))
    assert sorted(cluster[picked].tolist()) == [0, 1, 2, 3, 4]


def test_kmeans_picks_the_member_nearest_each_centroid(make_pool) -> None:
    # Two tight groups; each group's middle point is nearest its centroid.
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [5.0, 5.0], [5.1, 5.0], [5.2, 5.0], [5.1, 5.1]])
    picked = KMeansSampling().select(make_pool(embeddings=x), 2)
    assert picked.tolist() == [4, 1]  # the bigger cluster (4 members) first


def test_kmeans_refills_when_there_are_fewer_distinct_points_than_k(make_pool) -> None:
    x = np.repeat(np.eye(3), [4, 3, 3], axis=0)  # 3 distinct points, 10 items
    picked = KMeansSampling().select(make_pool(embeddings=x), 6)
    assert picked.size == 6 and np.unique(picked).size == 6
    assert {tuple(r) for r in x[picked[:3]]} == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}


def test_kmeans_k_equal_to_n_returns_everything(make_pool, clustered) -> None:
    x, _ = clustered(n_clusters=2, per_cluster=3)
    assert sorted(KMeansSampling().select(make_pool(embeddings=x), 6).tolist()) == list(range(6))


def test_coreset_picks_the_cluster_the_labeled_set_does_not_cover(make_pool, clustered) -> None:
    x, cluster = clustered(n_clusters=5, per_cluster=20)
    labeled = x[cluster != 3][::7]  # some labeled items from every cluster but 3
    assert set(cluster[::7][cluster[::7] != 3].tolist()) == {0, 1, 2, 4}
    pool = make_pool(embeddings=x, labeled_embeddings=labeled)
    assert cluster[CoresetSampling().select(pool, 1)[0]] == 3
    # Without the labeled set the center start would go elsewhere first.
    first = CoresetSampling().select(make_pool(embeddings=x), 5)
    assert sorted(cluster[first].tolist()) == [0, 1, 2, 3, 4]


def test_coreset_greedy_order_covers_every_prefix(make_pool, clustered) -> None:
    x, cluster = clustered(n_clusters=4, per_cluster=10)
    order = CoresetSampling().select(make_pool(embeddings=x), 8)
    assert sorted(cluster[order[:4]].tolist()) == [0, 1, 2, 3]


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="center, random"):
        CoresetSampling("middle")
    with pytest.raises(ValueError):
        KMeansSampling(max_iter=0)
