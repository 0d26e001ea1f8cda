"""Diversity sampling on sentence embeddings: k-means representatives and the greedy k-center coreset.

Distances are Euclidean. On L2-normalised embeddings (what the student gives) that is monotone in cosine
distance: ||a - b||^2 = 2 - 2 cos(a, b).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

from acquisition.base import PoolData, QueryStrategy

__all__ = [
    "CoresetSampling",
    "KMeansSampling",
    "greedy_k_center",
    "min_sq_distances",
    "squared_norms",
    "sq_distances_to",
    "start_traversal",
    "take",
]

# Bound on the entries of one temporary distance block (~64 MB in float64).
_BLOCK_ENTRIES = 8_000_000


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 norms, (n,)."""
    return np.einsum("ij,ij->i", x, x)


def sq_distances_to(x: np.ndarray, sq: np.ndarray, i: int) -> np.ndarray:
    """Squared Euclidean distance of every row of x to row i (`sq`: the rows' squared norms), (n,).

    One matrix-vector product; rounding can make it slightly negative."""
    return sq - 2.0 * (x @ x[i]) + sq[i]


def take(x: np.ndarray, sq: np.ndarray, taken: np.ndarray, min_d: np.ndarray, c: int) -> None:
    """Choose point c in a traversal: mark it taken and lower `min_d` (each point's squared distance to the
    chosen set) in place."""
    taken[c] = True
    np.minimum(min_d, sq_distances_to(x, sq, c), out=min_d)


def min_sq_distances(x: np.ndarray, y: np.ndarray, block_entries: int = _BLOCK_ENTRIES) -> np.ndarray:
    """For each row of x (n, d), the squared Euclidean distance to its nearest row of y (m, d).

    Blocked over both x and y so memory stays O(block_entries) whatever n and m are.
    """
    n, m = x.shape[0], y.shape[0]
    if m == 0:
        return np.full(n, np.inf)
    out = np.full(n, np.inf)
    xn, yn = squared_norms(x), squared_norms(y)
    rows = max(1, min(n, block_entries // max(1, min(m, block_entries))))
    cols = max(1, block_entries // rows)
    for i in range(0, n, rows):
        xs = x[i : i + rows]
        best = out[i : i + rows]
        for j in range(0, m, cols):
            d = xn[i : i + rows, None] - 2.0 * (xs @ y[j : j + cols].T) + yn[None, j : j + cols]
            np.minimum(best, d.min(axis=1), out=best)
    # The expansion can go slightly negative through rounding.
    return np.maximum(out, 0.0)


def start_traversal(
    x: np.ndarray, k: int, *, init_sq_dist: np.ndarray | None, first: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Shared start of the greedy traversals (k-center, k-means++ seeding) over x, choosing k items.

    Returns (squared norms, chosen indices buffer, taken mask, squared distance of each point to the
    chosen-or-given set, index of the next step). The distances start from `init_sq_dist` when given
    (nothing chosen yet), else from item `first` (None: the point nearest the mean, the most central
    one), which is then chosen at step 0.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    sq = squared_norms(x)
    chosen = np.empty(k, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    if init_sq_dist is not None:
        return sq, chosen, taken, np.array(init_sq_dist, dtype=np.float64, copy=True), 0
    if first is None:
        first = int(np.argmin(sq - 2.0 * (x @ x.mean(axis=0))))
    chosen[0] = first
    taken[first] = True
    return sq, chosen, taken, np.maximum(sq_distances_to(x, sq, first), 0.0), 1


def greedy_k_center(
    x: np.ndarray,
    k: int,
    *,
    init_sq_dist: np.ndarray | None = None,
    first: int | None = None,
) -> np.ndarray:
    """Farthest-first traversal: k indices into x, each the point farthest from everything chosen before.

    Start either from `init_sq_dist` (squared distance of each point to an existing set, e.g. the
    labeled items) or, if that is None, by taking `first` (default: the point nearest the mean, the most
    central one). Each step is one matrix-vector product, so the whole run is O(n·k·d) time, O(n) memory.
    A 2-approximation of the k-center objective (max distance from any point to its nearest center).
    """
    sq, chosen, taken, min_d, start = start_traversal(x, k, init_sq_dist=init_sq_dist, first=first)
    for step in range(start, k):
        # Already-chosen points are masked explicitly: with duplicate embeddings their distance
        # ties with unchosen copies at 0 and argmax could otherwise return one twice.
        masked = np.where(taken, -1.0, min_d)
        c = int(np.argmax(masked))
        chosen[step] = c
        take(x, sq, taken, min_d, c)
    return chosen


class CoresetSampling(QueryStrategy):
    """Greedy k-center coreset (Sener & Savarese 2018) on the pool embeddings.

    Seeded from `labeled_embeddings` when given, so the batch goes to the regions the labeled set
    does not cover yet; otherwise the first pick is the pool item nearest the pool mean (`start="center"`)
    or a random one (`start="random"`). Order: the greedy order, so every prefix is itself a good cover.
    """

    name = "coreset"

    @property
    def needs_embeddings(self) -> bool:
        return True

    def __init__(self, start: str = "center") -> None:
        if start not in ("center", "random"):
            raise ValueError(f"unknown start {start!r}; valid: center, random")
        self.start = start

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        x = pool.require_embeddings()
        if pool.labeled_embeddings is not None:
            return greedy_k_center(x, k, init_sq_dist=min_sq_distances(x, pool.labeled_embeddings))
        first = int(rng.integers(pool.n)) if self.start == "random" else None
        return greedy_k_center(x, k, first=first)


class KMeansSampling(QueryStrategy):
    """k clusters on the embeddings; from each cluster, the member nearest its centroid.

    Taking the representative among the cluster's own members (rather than the reference's argmin
    over the whole pool) makes picks unique by construction. Clusters that end up empty (duplicate
    embeddings, mini-batch updates) are refilled with the unused item nearest their centroid, so the
    batch always has exactly k items. Order: biggest cluster first (the most representative item).
    Pools above `minibatch_threshold` items use MiniBatchKMeans to stay fast.
    """

    name = "kmeans"

    @property
    def needs_embeddings(self) -> bool:
        return True

    def __init__(self, minibatch_threshold: int = 20_000, max_iter: int = 100, n_init: int = 1) -> None:
        if minibatch_threshold < 1 or max_iter < 1 or n_init < 1:
            raise ValueError("minibatch_threshold, max_iter and n_init must be positive")
        self.minibatch_threshold = minibatch_threshold
        self.max_iter = max_iter
        self.n_init = n_init

    def _cluster(self, x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        model: KMeans | MiniBatchKMeans
        if x.shape[0] > self.minibatch_threshold:
            # k-means++ on an init sample of 3k (sklearn's floor) rather than its default 3·batch_size:
            # on 100k x 384 with k=1000 that is ~0.5 s instead of ~5 s, with the same inertia.
            model = MiniBatchKMeans(
                n_clusters=k, batch_size=2048, init_size=min(x.shape[0], 3 * k), max_iter=self.max_iter,
                n_init=self.n_init, max_no_improvement=3, random_state=seed,
            )
        else:
            model = KMeans(n_clusters=k, max_iter=self.max_iter, n_init=self.n_init, random_state=seed)
        with warnings.catch_warnings():
            # Fewer distinct points than k is handled below by the refill, not an error.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x)
        return np.asarray(model.cluster_centers_, dtype=np.float64), np.asarray(model.labels_, dtype=np.int64)

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        x = pool.require_embeddings()
        n = pool.n
        if k == n:
            return np.arange(n)
        centers, labels = self._cluster(x, k, int(rng.integers(2**31 - 1)))
        # Squared distance of each item to its own centroid, in blocks to bound memory.
        dist = np.empty(n)
        step = max(1, _BLOCK_ENTRIES // max(1, x.shape[1]))
        for i in range(0, n, step):
            diff = x[i : i + step] - centers[labels[i : i + step]]
            dist[i : i + step] = np.einsum("ij,ij->i", diff, diff)
        # Nearest member per cluster: sort by (cluster, distance, index) and take each cluster's first.
        order = np.lexsort((np.arange(n), dist, labels))
        first_of_cluster = np.ones(n, dtype=bool)
        first_of_cluster[1:] = labels[order][1:] != labels[order][:-1]
        reps = np.full(k, -1, dtype=np.int64)
        reps[labels[order][first_of_cluster]] = order[first_of_cluster]
        sizes = np.bincount(labels, minlength=k)
        taken = np.zeros(n, dtype=bool)
        taken[reps[reps >= 0]] = True
        sq = squared_norms(x) if (reps < 0).any() else None
        for c in np.flatnonzero(reps < 0):
            assert sq is not None
            d = np.where(taken, np.inf, sq - 2.0 * (x @ centers[c]))
            reps[c] = int(np.argmin(d))
            taken[reps[c]] = True
        by_size = np.lexsort((np.arange(k), -sizes))
        return reps[by_size]
