"""Active acquisition: which pool sentences to label next, from the student's marginals and embeddings.

    from acquisition import PoolData, get_strategy
    pool = PoolData(ids=ids, marginals=marginals, embeddings=emb, labeled_embeddings=lab)
    order = get_strategy("hybrid").select(pool, k=50, rng=np.random.default_rng(0))
    # or a batch of at most 2,000 words a reviewer reads:
    order = select_within_budget(get_strategy("least_confidence"), pool, 2000, WordCost().costs(texts))

See docs/acquisition.md.
"""

from acquisition.bald import BALD, bald_scores, bald_token_scores
from acquisition.base import (
    AcquisitionError,
    EmptyPoolError,
    MissingPoolDataError,
    PoolData,
    PoolExhaustedError,
    QueryStrategy,
)
from acquisition.cost import (
    BUDGET_UNITS,
    CostModel,
    SentenceCost,
    TokenCost,
    WordCost,
    budget_ranking,
    fill_budget,
    get_cost_model,
    select_within_budget,
)
from acquisition.diversity import CoresetSampling, KMeansSampling, greedy_k_center, min_sq_distances
from acquisition.hybrid import DensityHybrid, HybridSampling, WeightedHybrid, entity_density, kmeans_pp_seeding
from acquisition.random import RandomSampling
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
    "BALD",
    "BUDGET_UNITS",
    "MNLP",
    "STRATEGIES",
    "AcquisitionError",
    "CoresetSampling",
    "CostModel",
    "DensityHybrid",
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
    "SentenceCost",
    "SuspectMix",
    "TokenCost",
    "UncertaintySampling",
    "WeightedHybrid",
    "WordCost",
    "aggregate",
    "available_strategies",
    "bald_scores",
    "bald_token_scores",
    "budget_ranking",
    "entity_density",
    "fill_budget",
    "get_cost_model",
    "get_strategy",
    "greedy_k_center",
    "kmeans_pp_seeding",
    "min_sq_distances",
    "mix_suspects",
    "select_within_budget",
    "suspect_stream",
    "token_scores",
    "token_uncertainty",
]
