"""The registry, the package exports and random sampling."""

from __future__ import annotations

import numpy as np
import pytest

import acquisition
from acquisition.base import QueryStrategy
from acquisition.hybrid import HybridSampling
from acquisition.random import RandomSampling
from acquisition.strategies import available_strategies, get_strategy
from acquisition.uncertainty import MNLP, EntropySampling

NAMES = ["random", "entropy", "least_confidence", "mnlp", "kmeans", "coreset", "hybrid", "weighted_hybrid", "bald",
         "density_hybrid"]


def test_registry_has_exactly_the_documented_names() -> None:
    assert available_strategies() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_name_builds_a_strategy_with_that_name(name: str) -> None:
    strategy = get_strategy(name)
    assert isinstance(strategy, QueryStrategy)
    assert strategy.name == name


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'badge'; valid: random, entropy, .*weighted_hybrid"):
        get_strategy("badge")


def test_options_are_passed_and_checked() -> None:
    mnlp = get_strategy("mnlp", aggregation="sum")
    assert isinstance(mnlp, MNLP) and mnlp.aggregation == "sum"
    hybrid = get_strategy("hybrid", uncertainty="entropy", beta=2, diversity="kmeans++")
    assert isinstance(hybrid, HybridSampling) and isinstance(hybrid.uncertainty, EntropySampling)
    with pytest.raises(ValueError, match="valid options: aggregation"):
        get_strategy("entropy", lam=0.3)
    with pytest.raises(ValueError, match="valid options: none"):
        get_strategy("random", seed=1)


def test_package_exports() -> None:
    assert acquisition.get_strategy is get_strategy
    for name in acquisition.__all__:
        assert hasattr(acquisition, name), name


def test_random_sampling_is_reproducible_and_seed_dependent(make_pool) -> None:
    pool = make_pool(n=100)
    a = RandomSampling().select(pool, 10, np.random.default_rng(1))
    b = RandomSampling().select(pool, 10, np.random.default_rng(1))
    c = RandomSampling().select(pool, 10, np.random.default_rng(2))
    assert a.tolist() == b.tolist() != c.tolist()
    assert RandomSampling().select(pool, 10).tolist() == RandomSampling().select(pool, 10, 0).tolist()
    assert sorted(RandomSampling().select(pool, 100).tolist()) == list(range(100))


def test_random_sampling_needs_no_model_outputs(make_pool) -> None:
    assert RandomSampling().scores(make_pool(n=3)) is None
    assert RandomSampling().select(make_pool(n=3), 3).size == 3
