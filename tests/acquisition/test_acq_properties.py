"""Properties every strategy must keep on arbitrary pools: exactly k unique indices, reproducible."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.base import PoolData, QueryStrategy
from acquisition.hybrid import DensityHybrid, HybridSampling, WeightedHybrid
from acquisition.strategies import available_strategies, get_strategy
from acquisition.suspect import SuspectMix

STRATEGIES: list[QueryStrategy] = [get_strategy(name) for name in available_strategies()] + [
    HybridSampling(diversity="kmeans++", beta=2),
    HybridSampling(uncertainty="mnlp", beta=1.5),
    WeightedHybrid(lam=0.0),
    HybridSampling(uncertainty="bald", aggregation="sum"),
    DensityHybrid(uncertainty="mnlp", density_power=0.0, beta=1.0),
    SuspectMix(get_strategy("least_confidence"), fraction=0.5),
]


@st.composite
def pools(draw: st.DrawFn) -> tuple[PoolData, int]:
    n = draw(st.integers(1, 25))
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    # Coarse grid coordinates so duplicate embeddings (the k-means/coreset edge case) are common.
    emb = rng.integers(0, draw(st.integers(1, 3)), size=(n, d)).astype(float)
    lengths = rng.integers(0, 4, size=n)
    marginals = [rng.dirichlet(np.ones(3), size=int(m)) for m in lengths]
    passes = int(rng.integers(2, 4))
    mc = [rng.dirichlet(np.ones(3), size=(passes, int(m))) for m in lengths]
    n_lab = draw(st.integers(0, 4))
    labeled = rng.integers(0, 3, size=(n_lab, d)).astype(float) if n_lab else None
    suspects = rng.uniform(size=n) if draw(st.booleans()) else None
    pool = PoolData(ids=[f"t{i}" for i in range(n)], marginals=marginals, embeddings=emb,
                    labeled_embeddings=labeled, suspect_scores=suspects, mc_marginals=mc)
    return pool, draw(st.integers(1, n))


@settings(max_examples=30, deadline=None)
@given(case=pools(), seed=st.integers(0, 1000))
def test_every_strategy_returns_exactly_k_unique_indices_reproducibly(
    case: tuple[PoolData, int], seed: int
) -> None:
    pool, k = case
    for strategy in STRATEGIES:
        got = strategy.select(pool, k, np.random.default_rng(seed))
        assert got.dtype == np.int64 and got.shape == (k,), strategy.name
        assert np.unique(got).size == k, strategy.name
        assert got.min() >= 0 and got.max() < pool.n, strategy.name
        again = strategy.select(pool, k, np.random.default_rng(seed))
        assert got.tolist() == again.tolist(), f"{strategy.name} is not deterministic for a fixed seed"
        scores = strategy.scores(pool)
        if scores is not None:
            assert scores.shape == (pool.n,) and np.isfinite(scores).all(), strategy.name
