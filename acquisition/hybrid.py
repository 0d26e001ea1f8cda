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

(c) `DensityHybrid` (weighted k-means++ seeding): each item has a weight
        w_i = U_i · E_i^density_power
    where U is the uncertainty score (least confidence, mean over words, by default) and E the
    expected share of the sentence's words inside an entity, mean_w (1 − p_w(O)). Keep the top
    m = min(ceil(beta·k), n) items by w, then draw k of them one at a time with probability
    ∝ w_i · D_i², D_i being the distance to the nearest item of (labeled set ∪ items drawn so far);
    with nothing labeled the first item is the one with the highest w. Unlike (a)'s k-center step,
    an outlying sentence is only drawn if it is also uncertain and entity-dense, so the batch keeps
    least confidence's entity-dense picks while spreading over the embedding space (D² sampling is
    the seeding step of BADGE, Ash et al. 2020, with the gradient-embedding norm replaced by w).
    Both U and E are per-word means, so the weight does not grow with length: under a word budget it
    is a value per word read.
"""

from __future__ import annotations

import math

import numpy as np

from acquisition.bald import BALD
from acquisition.base import PoolData, QueryStrategy, top_k_desc
from acquisition.diversity import (
    greedy_k_center,
    min_sq_distances,
    sq_distances_to,
    squared_norms,
    start_traversal,
    take,
)
from acquisition.uncertainty import UNCERTAINTY_STRATEGIES, Aggregation, aggregate

__all__ = ["DensityHybrid", "HybridSampling", "WeightedHybrid", "entity_density", "kmeans_pp_seeding"]

_DIVERSITY = ("kcenter", "kmeans++")


# The uncertainty scores a hybrid can start from, by name.
_UNCERTAINTY_BY_NAME: dict[str, type[QueryStrategy]] = {**UNCERTAINTY_STRATEGIES, "bald": BALD}


def _resolve_uncertainty(
    uncertainty: QueryStrategy | str | None, aggregation: Aggregation | None = None
) -> QueryStrategy:
    """A strategy object from a name (with `aggregation`, default "mean") or the object itself."""
    if uncertainty is None:
        uncertainty = "least_confidence"
    if isinstance(uncertainty, str):
        if uncertainty not in _UNCERTAINTY_BY_NAME:
            raise ValueError(
                f"unknown uncertainty strategy {uncertainty!r}; valid: {', '.join(_UNCERTAINTY_BY_NAME)}"
            )
        return _UNCERTAINTY_BY_NAME[uncertainty](aggregation=aggregation or "mean")  # type: ignore[call-arg]
    if not isinstance(uncertainty, QueryStrategy):
        raise TypeError(f"uncertainty must be a QueryStrategy or a name, got {type(uncertainty).__name__}")
    if aggregation is not None:
        raise ValueError("aggregation applies to an uncertainty given by name; set it on the strategy object")
    return uncertainty


class _UncertainAndSpread(QueryStrategy):
    """What every hybrid needs: its uncertainty's inputs plus the embeddings."""

    uncertainty: QueryStrategy

    @property
    def needs_marginals(self) -> bool:
        return self.uncertainty.needs_marginals

    @property
    def needs_mc_marginals(self) -> bool:
        return self.uncertainty.needs_mc_marginals

    @property
    def needs_embeddings(self) -> bool:
        return True


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
        take(x, sq, taken, d, c)
    return chosen


class HybridSampling(_UncertainAndSpread):
    """Top min(ceil(beta·k), n) by uncertainty, then k of them chosen for coverage (see module doc)."""

    name = "hybrid"

    def __init__(
        self, uncertainty: QueryStrategy | str | None = None, beta: float = 4.0, diversity: str = "kcenter",
        aggregation: Aggregation | None = None,
    ) -> None:
        if not (isinstance(beta, int | float) and math.isfinite(beta) and beta >= 1.0):
            raise ValueError(f"beta must be a finite number >= 1, got {beta!r}")
        if diversity not in _DIVERSITY:
            raise ValueError(f"unknown diversity {diversity!r}; valid: {', '.join(_DIVERSITY)}")
        self.uncertainty = _resolve_uncertainty(uncertainty, aggregation)
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


class WeightedHybrid(_UncertainAndSpread):
    """Greedy lam·uncertainty + (1 − lam)·distance-to-labeled-and-picked, both min-max normalised."""

    name = "weighted_hybrid"

    def __init__(
        self, uncertainty: QueryStrategy | str | None = None, lam: float = 0.5, aggregation: Aggregation | None = None
    ) -> None:
        if not (isinstance(lam, int | float) and 0.0 <= lam <= 1.0):
            raise ValueError(f"lam must be in [0, 1], got {lam!r}")
        self.uncertainty = _resolve_uncertainty(uncertainty, aggregation)
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
            new = sq_distances_to(x, sq, c)
            dsq = new if dsq is None else np.minimum(dsq, new)
        return chosen


def entity_density(pool: PoolData) -> np.ndarray:
    """Expected share of a sentence's words inside an entity, mean_w (1 − p_w(O)), (n,); 0 for 0 words.

    From `marginals` (label 0 = "O"), or from the mean of the MC passes when only those are given.
    """
    if pool.marginals is not None:
        flat, lengths = pool.flat_marginals
        return aggregate(1.0 - flat[:, 0], lengths, "mean") if flat.size else np.zeros(pool.n)
    mc = pool.require_mc_marginals()
    return np.array([float(1.0 - m[:, :, 0].mean()) if m.shape[1] else 0.0 for m in mc])


class DensityHybrid(_UncertainAndSpread):
    """Uncertainty- and entity-density-weighted k-means++ seeding (see module doc, (c))."""

    name = "density_hybrid"

    def __init__(
        self, uncertainty: QueryStrategy | str | None = None, beta: float = 10.0, density_power: float = 1.0,
        aggregation: Aggregation | None = None,
    ) -> None:
        if not (isinstance(beta, int | float) and math.isfinite(beta) and beta >= 1.0):
            raise ValueError(f"beta must be a finite number >= 1, got {beta!r}")
        if not (isinstance(density_power, int | float) and math.isfinite(density_power) and density_power >= 0):
            raise ValueError(f"density_power must be a finite number >= 0, got {density_power!r}")
        self.uncertainty = _resolve_uncertainty(uncertainty, aggregation)
        self.beta = float(beta)
        self.density_power = float(density_power)

    @property
    def needs_marginals(self) -> bool:
        # The density reads the marginals, unless the uncertainty brings MC passes to read it from.
        return self.uncertainty.needs_marginals or not self.uncertainty.needs_mc_marginals

    def scores(self, pool: PoolData) -> np.ndarray:
        """The sampling weight w = uncertainty · density^density_power (both >= 0)."""
        u = np.maximum(_uncertainty_scores(self.uncertainty, pool), 0.0)
        if self.density_power == 0.0:
            return u
        return u * entity_density(pool) ** self.density_power

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        x_all = pool.require_embeddings()
        w_all = self.scores(pool)
        cand = top_k_desc(w_all, min(math.ceil(self.beta * k), pool.n))  # highest weight first
        x, w = x_all[cand], w_all[cand]
        init = None if pool.labeled_embeddings is None else min_sq_distances(x, pool.labeled_embeddings)
        sq, chosen, taken, d, start = start_traversal(x, k, init_sq_dist=init, first=0)
        for step in range(start, k):
            p = np.where(taken, 0.0, w * np.maximum(d, 0.0))
            cum = np.cumsum(p)
            if cum[-1] > 0.0:
                c = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
                c = min(c, cand.size - 1)
            else:
                c = int(np.argmin(taken))  # nothing left with weight and distance: the best unused candidate
            chosen[step] = c
            take(x, sq, taken, d, c)
        return cand[chosen]
