"""Active acquisition: which pool sentences to label next, from the student's marginals and embeddings.

    from acquisition import PoolData, get_strategy, rank_scores
    pool = PoolData(ids=ids, marginals=marginals, embeddings=emb, labeled_embeddings=lab)
    order = get_strategy("hybrid").select(pool, k=50, rng=np.random.default_rng(0))
    ls_scores = rank_scores(order, pool.n)  # lowest first = served first in Label Studio

See docs/acquisition.md.
"""

from acquisition.base import (
    AcquisitionError,
    EmptyPoolError,
    MissingPoolDataError,
    PoolData,
    PoolExhaustedError,
    QueryStrategy,
)
from acquisition.diversity import CoresetSampling, KMeansSampling, greedy_k_center, min_sq_distances
from acquisition.hybrid import HybridSampling, WeightedHybrid, kmeans_pp_seeding
from acquisition.random import RandomSampling
from acquisition.ranking import rank_scores
from acquisition.strategies import STRATEGIES, available_strategies, get_strategy
from acquisition.suspect import SuspectMix, mix_suspects, suspect_stream
from acquisition.uncertainty import (
    MNLP,
    EntropySampling,
    LeastConfidence,
    UncertaintySampling,
    aggregate,
    token_scores,
    token_uncertainty,
)

__all__ = [
    "MNLP",
    "STRATEGIES",
    "AcquisitionError",
    "CoresetSampling",
    "EmptyPoolError",
    "EntropySampling",
    "HybridSampling",
    "KMeansSampling",
    "LeastConfidence",
    "MissingPoolDataError",
    "PoolData",
    "PoolExhaustedError",
    "QueryStrategy",
    "RandomSampling",
    "SuspectMix",
    "UncertaintySampling",
    "WeightedHybrid",
    "aggregate",
    "available_strategies",
    "get_strategy",
    "greedy_k_center",
    "kmeans_pp_seeding",
    "min_sq_distances",
    "mix_suspects",
    "rank_scores",
    "suspect_stream",
    "token_scores",
    "token_uncertainty",
]
