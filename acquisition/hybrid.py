"""Hybrid strategies: uncertain *and* spread out. LLMaAA accepts `hybrid` but never implemented it.

Two definitions, both returning exactly k unique items in pick order:

(a) `HybridSampling` (filter, then cover): keep the top m = min(ceil(beta·k), n) items by an uncertainty
    score, then choose k of those m for coverage of the embedding space:
    - `diversity="kcenter"`: greedy k-center over the m candidates, seeded from the labeled set when
      `labeled_embeddings` is given, else starting from the most uncertain candidate;
    - `diversity="kmeans++"`: k-means++ seeding (D² sampling with the pool rng) over the candidates,
      with D measured to the labeled set when given, else starting from the most uncertain candidate.
    beta = 1 is plain uncertainty sampling; beta >= n/k is plain diversity sampling.

(b) `WeightedHybrid` (one greedy score): at each step pick the unpicked item maximising
        lam · U_i + (1 − lam) · D_i
    where U is the uncertainty score min-max normalised over the pool and D is the Euclidean distance
    to the nearest item of (labeled set ∪ items picked so far), min-max normalised over the unpicked
    items. D is recomputed after every pick, so the batch spreads out. Before anything is labeled or
    picked D is undefined and counts 0 (the first pick is then the most uncertain item).
    lam = 1 is plain uncertainty sampling; lam = 0 is greedy k-center.
"""

from __future__ import annotations

import math

import numpy as np

from acquisition.base import PoolData, QueryStrategy, top_k_desc
from acquisition.diversity import greedy_k_center, min_sq_distances, squared_norms, start_traversal
from acquisition.uncertainty import UNCERTAINTY_STRATEGIES, LeastConfidence

__all__ = ["HybridSampling", "WeightedHybrid", "kmeans_pp_seeding"]

_DIVERSITY = ("kcenter", "kmeans++")


def _resolve_uncertainty(uncertainty: QueryStrategy | str | None) -> QueryStrategy:
    if uncertainty is None:
        return LeastConfidence()
    if isinstance(uncertainty, str):
        if uncertainty not in UNCERTAINTY_STRATEGIES:
            raise ValueError(
                f"unknown uncertainty strategy {uncertainty!r}; valid: {', '.join(UNCERTAINTY_STRATEGIES)}"
            )
        return UNCERTAINTY_STRATEGIES[uncertainty]()
    if not isinstance(uncertainty, QueryStrategy):
        raise TypeError(f"uncertainty must be a QueryStrategy or a name, got {type(uncertainty).__name__}")
    return uncertainty


def _uncertainty_scores(strategy: QueryStrategy, pool: PoolData) -> np.ndarray:
    scores = strategy.scores(pool)
    if scores is None:
        raise ValueError(f"{strategy.name} has no per-item scores; a hybrid needs an uncertainty strategy")
    return np.asarray(scores, dtype=np.float64)


def _minmax(v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Scale to [0, 1] using the min/max over `mask` (all items if None); a constant vector maps to 0."""
    ref = v if mask is None else v[mask]
    if ref.size == 0:
        return np.zeros_like(v)
    lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:
        return np.zeros_like(v)
    return (v - lo) / (hi - lo)


def kmeans_pp_seeding(
    x: np.ndarray, k: int, rng: np.random.Generator, *, init_sq_dist: np.ndarray | None = None
) -> np.ndarray:
    """k-means++ seeding: k unique indices into x, each drawn with probability ∝ D² to the chosen set.

    Starts from `init_sq_dist` (distances to an existing set) if given, else from index 0. When every
    remaining D is 0 (duplicates), the lowest unchosen index is taken, so the result is always k unique.
    """
    sq, chosen, taken, d, start = start_traversal(x, k, init_sq_dist=init_sq_dist, first=0)
    for step in range(start, k):
        # Chosen items get weight exactly 0 (rounding can leave a tiny positive self-distance).
        w = np.where(taken, 0.0, np.maximum(d, 0.0))
        cum = np.cumsum(w)
        if cum[-1] > 0.0:
            c = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        else:
            c = int(np.argmin(taken))
        chosen[step] = c
        taken[c] = True
        np.minimum(d, sq - 2.0 * (x @ x[c]) + sq[c], out=d)
    return chosen


class HybridSampling(QueryStrategy):
    """Top min(ceil(beta·k), n) by uncertainty, then k of them chosen for coverage (see module doc)."""

    name = "hybrid"

    def __init__(
        self, uncertainty: QueryStrategy | str | None = None, beta: float = 4.0, diversity: str = "kcenter"
    ) -> None:
        if not (isinstance(beta, int | float) and math.isfinite(beta) and beta >= 1.0):
            raise ValueError(f"beta must be a finite number >= 1, got {beta!r}")
        if diversity not in _DIVERSITY:
            raise ValueError(f"unknown diversity {diversity!r}; valid: {', '.join(_DIVERSITY)}")
        self.uncertainty = _resolve_uncertainty(uncertainty)
        self.beta = float(beta)
        self.diversity = diversity

    def scores(self, pool: PoolData) -> np.ndarray:
        """The uncertainty scores that decide the candidate set."""
        return _uncertainty_scores(self.uncertainty, pool)

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        x_all = pool.require_embeddings()
        u = self.scores(pool)
        m = min(math.ceil(self.beta * k), pool.n)
        cand = top_k_desc(u, m)  # most uncertain first, so index 0 of `cand` is the best candidate
        x = x_all[cand]
        init = None if pool.labeled_embeddings is None else min_sq_distances(x, pool.labeled_embeddings)
        if self.diversity == "kcenter":
            chosen = greedy_k_center(x, k, init_sq_dist=init, first=0)
        else:
            chosen = kmeans_pp_seeding(x, k, rng, init_sq_dist=init)
        return cand[chosen]


class WeightedHybrid(QueryStrategy):
    """Greedy lam·uncertainty + (1 − lam)·distance-to-labeled-and-picked, both min-max normalised."""

    name = "weighted_hybrid"

    def __init__(self, uncertainty: QueryStrategy | str | None = None, lam: float = 0.5) -> None:
        if not (isinstance(lam, int | float) and 0.0 <= lam <= 1.0):
            raise ValueError(f"lam must be in [0, 1], got {lam!r}")
        self.uncertainty = _resolve_uncertainty(uncertainty)
        self.lam = float(lam)

    def scores(self, pool: PoolData) -> np.ndarray:
        """The combined score before any pick (so its argmax is the first item `select` returns)."""
        u = _minmax(_uncertainty_scores(self.uncertainty, pool))
        if pool.labeled_embeddings is None:
            return self.lam * u
        d = np.sqrt(min_sq_distances(pool.require_embeddings(), pool.labeled_embeddings))
        return self.lam * u + (1.0 - self.lam) * _minmax(d)

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        x = pool.require_embeddings()
        u = _minmax(_uncertainty_scores(self.uncertainty, pool))
        sq = squared_norms(x)
        dsq = None if pool.labeled_embeddings is None else min_sq_distances(x, pool.labeled_embeddings)
        taken = np.zeros(pool.n, dtype=bool)
        chosen = np.empty(k, dtype=np.int64)
        for step in range(k):
            s = self.lam * u
            if dsq is not None:
                s = s + (1.0 - self.lam) * _minmax(np.sqrt(np.maximum(dsq, 0.0)), ~taken)
            c = int(np.argmax(np.where(taken, -np.inf, s)))
            chosen[step] = c
            taken[c] = True
            new = sq - 2.0 * (x @ x[c]) + sq[c]
            dsq = new if dsq is None else np.minimum(dsq, new)
        return chosen
