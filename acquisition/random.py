"""Random sampling: the baseline every other strategy must beat (LLMaAA's `random`, also its seed set)."""

from __future__ import annotations

import numpy as np

from acquisition.base import PoolData, QueryStrategy

__all__ = ["RandomSampling"]


class RandomSampling(QueryStrategy):
    """k items uniformly without replacement; needs nothing but the pool size."""

    name = "random"

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(pool.n, size=k, replace=False)
