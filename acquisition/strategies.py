"""The strategy registry: `get_strategy("least_confidence", aggregation="sum")`."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from acquisition.bald import BALD
from acquisition.base import QueryStrategy
from acquisition.diversity import CoresetSampling, KMeansSampling
from acquisition.hybrid import DensityHybrid, HybridSampling, WeightedHybrid
from acquisition.random import RandomSampling
from acquisition.uncertainty import MNLP, EntropySampling, LeastConfidence

__all__ = ["STRATEGIES", "available_strategies", "get_strategy"]

STRATEGIES: dict[str, Callable[..., QueryStrategy]] = {
    "random": RandomSampling,
    "entropy": EntropySampling,
    "least_confidence": LeastConfidence,
    "mnlp": MNLP,
    "kmeans": KMeansSampling,
    "coreset": CoresetSampling,
    "hybrid": HybridSampling,
    "weighted_hybrid": WeightedHybrid,
    "bald": BALD,
    "density_hybrid": DensityHybrid,
}


def available_strategies() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str, **options: object) -> QueryStrategy:
    """Build a strategy by name; unknown names and unknown options raise ValueError listing valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    factory = STRATEGIES[name]
    sig = inspect.signature(factory)
    try:
        sig.bind(**options)
    except TypeError as exc:
        valid = ", ".join(sig.parameters) or "none"
        raise ValueError(f"bad options for strategy {name!r} ({exc}); valid options: {valid}") from None
    return factory(**options)
