"""Cost models and budgeted selection: within budget exactly, maximal under the greedy rule, reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.base import EmptyPoolError, PoolData, QueryStrategy
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
from acquisition.hybrid import DensityHybrid, HybridSampling
from acquisition.strategies import available_strategies, get_strategy
from acquisition.suspect import SuspectMix

STRATEGIES: list[QueryStrategy] = [get_strategy(name) for name in available_strategies()] + [
    HybridSampling(diversity="kmeans++", beta=2),
    DensityHybrid(uncertainty="bald", beta=1.5),
    SuspectMix(get_strategy("mnlp"), fraction=0.5),
]


@dataclass
class _Example:
    text: str


# ---------------------------------------------------------------------------------------- cost models
def test_cost_models_price_sentences_words_and_tokens() -> None:
    text = "Aspirin  induced\thepatitis .\n"
    assert SentenceCost().cost(text) == 1.0
    assert WordCost().cost(text) == 4.0  # whitespace words, like the student's \S+ words
    assert WordCost().cost("   ") == 0.0
    # 29 characters -> ceil(29 / 4) = 8 text tokens on top of the prompt.
    assert TokenCost(prompt_overhead=100).cost(text) == 108.0
    assert TokenCost(prompt_overhead=0, chars_per_token=2.5).cost("abcdef") == 3.0
    assert WordCost().cost(_Example("two words")) == 2.0  # anything with .text, e.g. training Example
    assert WordCost().costs(["a b", "c", ""]).tolist() == [2.0, 1.0, 0.0]


def test_cost_model_errors_are_clear() -> None:
    with pytest.raises(TypeError, match="str or an object with a str .text"):
        WordCost().cost(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown budget unit 'pages'; valid: sentences, words, tokens"):
        get_cost_model("pages")
    with pytest.raises(ValueError, match="takes no options"):
        get_cost_model("words", prompt_overhead=3)
    with pytest.raises(ValueError, match="prompt_overhead"):
        TokenCost(prompt_overhead=-1)
    with pytest.raises(ValueError, match="chars_per_token"):
        TokenCost(chars_per_token=0)


def test_get_cost_model_by_unit() -> None:
    assert [get_cost_model(u).unit for u in BUDGET_UNITS] == list(BUDGET_UNITS)
    model = get_cost_model("tokens", prompt_overhead=7)
    assert isinstance(model, TokenCost) and model.cost("abcd") == 8.0


# ------------------------------------------------------------------------------------------ fill rule
def test_fill_skips_what_does_not_fit_and_keeps_walking() -> None:
    costs = np.array([5.0, 3.0, 4.0, 1.0])
    # 5 + 3 = 8 of 9; the 4 does not fit and is skipped (not a stop), the 1 still fits.
    assert fill_budget(np.arange(4), costs, 9).tolist() == [0, 1, 3]
    assert fill_budget(np.arange(4), costs, 8).tolist() == [0, 1]
    assert fill_budget(np.array([3, 2, 1, 0]), costs, 8).tolist() == [3, 2, 1]
    assert fill_budget(np.arange(4), costs, 0.5).tolist() == []


def test_budget_arguments_are_checked(make_pool) -> None:  # noqa: ANN001
    pool = make_pool(n=3)
    rnd = get_strategy("random")
    with pytest.raises(ValueError, match="budget must be a finite number >= 0"):
        select_within_budget(rnd, pool, -1, [1, 1, 1])
    with pytest.raises(ValueError, match=r"costs has shape \(2,\) but the pool has 3 items"):
        select_within_budget(rnd, pool, 2, [1, 1])
    with pytest.raises(ValueError, match="finite and >= 0"):
        select_within_budget(rnd, pool, 2, [1, -1, 1])
    with pytest.raises(TypeError, match="budget must be a number"):
        select_within_budget(rnd, pool, "2", [1, 1, 1])  # type: ignore[arg-type]
    with pytest.raises(EmptyPoolError):
        select_within_budget(rnd, make_pool(n=0), 2, [])


def test_budget_below_every_cost_gives_an_empty_batch(make_pool) -> None:  # noqa: ANN001
    got = select_within_budget(get_strategy("random"), make_pool(n=4), 2.0, [3, 4, 5, 6])
    assert got.dtype == np.int64 and got.tolist() == []


def test_sentence_budget_is_exactly_the_old_k_batch(random_marg) -> None:  # noqa: ANN001
    marg = random_marg(40, seed=3)
    emb = np.random.default_rng(3).standard_normal((40, 4))
    pool = PoolData(ids=[str(i) for i in range(40)], marginals=marg, embeddings=emb)
    for name in ("random", "least_confidence", "kmeans", "coreset", "hybrid", "density_hybrid"):
        strategy = get_strategy(name)
        old = strategy.select(pool, 7, np.random.default_rng(11))
        new = select_within_budget(strategy, pool, 7, SentenceCost().costs(["x"] * 40), np.random.default_rng(11))
        assert new.tolist() == old.tolist(), name


def test_word_budget_walks_an_uncertainty_ranking_in_score_order(random_marg) -> None:  # noqa: ANN001
    marg = random_marg(60, max_words=9, seed=5)
    pool = PoolData(ids=[str(i) for i in range(60)], marginals=marg)
    costs = np.array([m.shape[0] for m in marg], dtype=float)
    for name in ("least_confidence", "mnlp", "entropy"):
        s = get_strategy(name)
        ranking = np.argsort(-s.scores(pool), kind="stable")
        for budget in (0, 1, 13, 57, 140, costs.sum() + 3):
            got = select_within_budget(s, pool, budget, costs)
            assert got.tolist() == fill_budget(ranking, costs, budget).tolist(), (name, budget)


class _FirstK(QueryStrategy):
    """Picks items 0..k-1 and has no scores; records the batch sizes it was asked for."""

    name = "first_k"

    def __init__(self) -> None:
        self.asked: list[int] = []

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        self.asked.append(k)
        return np.arange(k)


def test_head_grows_while_the_batch_is_cheaper_than_the_budget(make_pool) -> None:  # noqa: ANN001
    # Items 0-9 cost 1 word, 10-99 cost 10: mean 9.1, so a 20-word budget first asks for k = 3, which
    # costs 3; the head grows by the 17 words left at 1 word per item, to k = 20. Without growing, the
    # rest would come from the random tail instead of the strategy's own order.
    costs = np.array([1.0] * 10 + [10.0] * 90)
    strategy = _FirstK()
    got = select_within_budget(strategy, make_pool(n=100), 20, costs)
    assert strategy.asked == [3, 20]
    assert got.tolist() == list(range(11))


# --------------------------------------------------------------------------------- hypothesis invariants
@st.composite
def priced_pools(draw: st.DrawFn) -> tuple[PoolData, list[str]]:
    n = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, size=n)
    texts = [" ".join("w" * int(rng.integers(1, 9)) for _ in range(int(m))) for m in lengths]
    marginals = [rng.dirichlet(np.ones(3), size=int(m)) for m in lengths]
    mc = [rng.dirichlet(np.ones(3), size=(2, int(m))) for m in lengths]
    d = draw(st.integers(1, 3))
    emb = rng.integers(0, 3, size=(n, d)).astype(float)  # duplicates are common on purpose
    labeled = rng.integers(0, 3, size=(2, d)).astype(float) if draw(st.booleans()) else None
    suspects = rng.uniform(size=n) if draw(st.booleans()) else None
    pool = PoolData(ids=[f"t{i}" for i in range(n)], marginals=marginals, embeddings=emb,
                    labeled_embeddings=labeled, suspect_scores=suspects, mc_marginals=mc)
    return pool, texts


COST_MODELS: list[CostModel] = [SentenceCost(), WordCost(), TokenCost(prompt_overhead=3, chars_per_token=4)]


@settings(max_examples=25, deadline=None)
@given(case=priced_pools(), fraction=st.floats(0.0, 1.2), seed=st.integers(0, 1000))
def test_every_strategy_stays_within_budget_exactly_and_fills_it_maximally(
    case: tuple[PoolData, list[str]], fraction: float, seed: int
) -> None:
    pool, texts = case
    for model in COST_MODELS:
        costs = model.costs(texts)
        budget = float(np.floor(fraction * costs.sum()))
        for strategy in STRATEGIES:
            label = f"{strategy.name} / {model.unit} / budget {budget}"
            got = select_within_budget(strategy, pool, budget, costs, np.random.default_rng(seed))
            assert got.dtype == np.int64 and np.unique(got).size == got.size, label
            spent = float(costs[got].sum())
            assert spent <= budget, label
            left_out = np.setdiff1d(np.arange(pool.n), got)
            # Maximal under the greedy rule: nothing left out would still have fitted.
            assert np.all(costs[left_out] > budget - spent), label
            again = select_within_budget(strategy, pool, budget, costs, np.random.default_rng(seed))
            assert got.tolist() == again.tolist(), f"{label}: not deterministic for a fixed seed"
            ranking = budget_ranking(strategy, pool, budget, costs, np.random.default_rng(seed))
            assert sorted(ranking.tolist()) == list(range(pool.n)), label
            assert got.tolist() == fill_budget(ranking, costs, budget).tolist(), label
