"""What a batch costs, and a batch that fits a budget: sentences, words a human reads, or LLM tokens.

A budget in sentences hides the real effort: least confidence picks short sentences, so 200 of its
sentences hold a third to a half of the words of 200 random ones (docs/simulation-results.md). A human's
effort is the words they read; the LLM's cost is the tokens it is sent. A `CostModel` prices one text in
one of these units, and `select_within_budget` turns any strategy's ranking into a batch whose total cost
never exceeds the budget and is filled as far as the greedy rule below allows.

Costs are whole numbers (sentences: 1, words: whitespace-delimited words, tokens: an integer estimate),
so the running sums are exact in float64 and "within budget" never depends on rounding.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np

from acquisition.base import EmptyPoolError, PoolData, QueryStrategy, as_generator

__all__ = [
    "BUDGET_UNITS",
    "BudgetUnit",
    "CostModel",
    "HasText",
    "SentenceCost",
    "TokenCost",
    "WordCost",
    "budget_ranking",
    "fill_budget",
    "get_cost_model",
    "select_within_budget",
]

BudgetUnit = Literal["sentences", "words", "tokens"]
BUDGET_UNITS: tuple[str, ...] = get_args(BudgetUnit)

# The prompt around one query: instructions, label list and 5 k-NN demonstrations with their JSON
# answers. Measured with chars/4 on 50 rendered prompts per dataset (random dev demonstrations): ner.v2
# (the default template) 572 tokens on BC5CDR and 454 on CoNLL03, ner.v1 479 and 379. See docs/acquisition.md.
DEFAULT_PROMPT_OVERHEAD = 500
DEFAULT_CHARS_PER_TOKEN = 4.0


@runtime_checkable
class HasText(Protocol):
    """Anything with a `.text` (e.g. `training.data.Example`), without importing training here."""

    text: str


def _text_of(item: str | HasText) -> str:
    if isinstance(item, str):
        return item
    text = getattr(item, "text", None)
    if not isinstance(text, str):
        raise TypeError(f"a cost model prices a str or an object with a str .text, got {type(item).__name__}")
    return text


class CostModel(ABC):
    """Prices one text in `unit`. Costs are non-negative whole numbers returned as float."""

    unit: BudgetUnit

    @abstractmethod
    def cost(self, item: str | HasText) -> float:
        """The cost of labelling one text (a str or an object with `.text`)."""

    def costs(self, items: Iterable[str | HasText]) -> np.ndarray:
        """Costs of many texts, (n,) float64, in input order."""
        return np.fromiter((self.cost(it) for it in items), dtype=np.float64)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class SentenceCost(CostModel):
    """Every sentence costs 1: the old budget, kept so a sentence budget is one case of the same code."""

    unit: BudgetUnit = "sentences"

    def cost(self, item: str | HasText) -> float:
        _text_of(item)
        return 1.0


class WordCost(CostModel):
    """Whitespace-delimited words: what a reviewer reads, and the student's own word unit (`\\S+`)."""

    unit: BudgetUnit = "words"

    def cost(self, item: str | HasText) -> float:
        return float(len(_text_of(item).split()))


class TokenCost(CostModel):
    """Estimated LLM tokens for one annotation call: `prompt_overhead + ceil(len(text) / chars_per_token)`.

    chars/4 is the usual rule of thumb for English BPE vocabularies; it is cheap, deterministic and needs
    no tokenizer. The overhead is the prompt around the query (instructions and demonstrations), paid
    once per sentence because the annotator sends one sentence per call. The reply (about 10 tokens per
    entity) is left out: it is not known before the call.
    """

    unit: BudgetUnit = "tokens"

    def __init__(
        self, prompt_overhead: int = DEFAULT_PROMPT_OVERHEAD, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    ) -> None:
        if isinstance(prompt_overhead, bool) or not isinstance(prompt_overhead, int) or prompt_overhead < 0:
            raise ValueError(f"prompt_overhead must be an int >= 0, got {prompt_overhead!r}")
        if not (isinstance(chars_per_token, int | float) and math.isfinite(chars_per_token) and chars_per_token > 0):
            raise ValueError(f"chars_per_token must be a positive number, got {chars_per_token!r}")
        self.prompt_overhead = prompt_overhead
        self.chars_per_token = float(chars_per_token)

    def cost(self, item: str | HasText) -> float:
        return float(self.prompt_overhead + math.ceil(len(_text_of(item)) / self.chars_per_token))


def get_cost_model(unit: str, **options: object) -> CostModel:
    """`"sentences"`, `"words"` or `"tokens"` (options go to `TokenCost`); anything else is a ValueError."""
    if unit not in BUDGET_UNITS:
        raise ValueError(f"unknown budget unit {unit!r}; valid: {', '.join(BUDGET_UNITS)}")
    if unit == "tokens":
        return TokenCost(**options)  # type: ignore[arg-type]
    if options:
        raise ValueError(f"budget unit {unit!r} takes no options, got {', '.join(options)}")
    return SentenceCost() if unit == "sentences" else WordCost()


def _check_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, int | float | np.integer | np.floating):
        raise TypeError(f"budget must be a number, got {type(budget).__name__}")
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite number >= 0, got {budget!r}")
    return float(budget)


def _check_costs(costs: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    c = np.asarray(costs, dtype=np.float64)
    if c.shape != (n,):
        raise ValueError(f"costs has shape {c.shape} but the pool has {n} items")
    if not np.all(np.isfinite(c)) or (c.size and c.min() < 0):
        raise ValueError("costs must be finite and >= 0")
    return c


def fill_budget(order: np.ndarray, costs: np.ndarray, budget: float) -> np.ndarray:
    """Walk `order` and keep every item that still fits; skip (never stop at) one that does not.

    The kept items are in walk order, their total cost is <= budget, and when `order` holds the whole
    pool no left-out item fits the leftover budget (each was skipped when the leftover was at least as
    large as it ends up).
    """
    budget = _check_budget(budget)
    kept: list[int] = []
    left = budget
    for i in np.asarray(order, dtype=np.int64).tolist():
        c = float(costs[i])
        if c <= left:
            kept.append(i)
            left -= c  # whole-number costs: exact in float64
    return np.asarray(kept, dtype=np.int64)


def _head(
    strategy: QueryStrategy, pool: PoolData, budget: float, c: np.ndarray, gen: np.random.Generator,
    max_rounds: int,
) -> np.ndarray:
    """The strategy's own batch, sized so that it costs at least the budget when the pool allows.

    k starts at what the budget buys at the pool's mean cost and grows (each try from scratch, with the
    same rng state) while the batch costs less than the budget, e.g. when the strategy prefers short
    sentences. A sentence budget b <= n with unit costs stops at once: select(pool, b).
    """
    n = pool.n
    mean = float(c.mean())
    k = n if mean == 0 else min(n, max(1, math.ceil(budget / mean)))
    head = np.zeros(0, dtype=np.int64)
    for _ in range(max_rounds):
        head = strategy.select(pool, k, copy.deepcopy(gen))
        spent = float(c[head].sum())
        if spent >= budget or k == n:
            break
        per_item = spent / k
        k = n if per_item == 0 else min(n, k + max(1, math.ceil((budget - spent) / per_item)))
    return head


def _checked_head(
    strategy: QueryStrategy, pool: PoolData, budget: float, costs: Sequence[float] | np.ndarray,
    rng: np.random.Generator | int | None, max_rounds: int, purpose: str,
) -> tuple[float, np.ndarray, np.random.Generator, np.ndarray]:
    """(budget, costs, rng) checked, and the head batch (`_head`): where ranking and selection both begin."""
    budget = _check_budget(budget)
    c = _check_costs(costs, pool.n)
    if pool.n == 0:
        raise EmptyPoolError(f"the pool is empty: nothing to {purpose}")
    gen = as_generator(rng)
    return budget, c, gen, _head(strategy, pool, budget, c, gen, max_rounds)


def _tail(strategy: QueryStrategy, pool: PoolData, head: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Every item not in `head`: by the strategy's scores (descending, ties to the lower index) when it
    has them, else in a seeded random order."""
    rest_mask = np.ones(pool.n, dtype=bool)
    rest_mask[head] = False
    rest = np.flatnonzero(rest_mask)
    if rest.size == 0:
        return rest
    scores = strategy.scores(pool)
    if scores is not None:
        return rest[np.argsort(-np.asarray(scores, dtype=np.float64)[rest], kind="stable")]
    return rest[copy.deepcopy(gen).permutation(rest.size)]


def budget_ranking(
    strategy: QueryStrategy,
    pool: PoolData,
    budget: float,
    costs: Sequence[float] | np.ndarray,
    rng: np.random.Generator | int | None = None,
    *,
    max_rounds: int = 6,
) -> np.ndarray:
    """The ranking `select_within_budget` walks: a permutation of the whole pool, the strategy's batch first."""
    budget, c, gen, head = _checked_head(strategy, pool, budget, costs, rng, max_rounds, "rank")
    return np.concatenate([head, _tail(strategy, pool, head, gen)]).astype(np.int64)


def select_within_budget(
    strategy: QueryStrategy,
    pool: PoolData,
    budget: float,
    costs: Sequence[float] | np.ndarray,
    rng: np.random.Generator | int | None = None,
    *,
    max_rounds: int = 6,
) -> np.ndarray:
    """Unique pool indices, most valuable first, whose `costs` sum to at most `budget`.

    `costs[i]` is item i's price in the budget's unit, e.g. `WordCost().costs(texts)` for the pool's
    texts in pool order. The rule, applied to any strategy:

    1. Ranking: the strategy's batch `select(pool, k)` first, with k chosen so that the batch costs at
       least the budget (k starts at budget / mean cost and grows, at most `max_rounds` tries, while the
       batch is cheaper than the budget), then every other item by the strategy's `scores`
       (descending), or in a seeded random order for strategies without scores.
    2. Fill: walk the ranking, keep each item whose cost still fits the leftover budget, skip the others.

    So the total never exceeds the budget, and no left-out item would have fitted (the fill is maximal).
    With unit costs and an integer budget b <= n this is exactly `strategy.select(pool, b, rng)`. A
    budget below every item's cost gives an empty batch; an empty pool raises `EmptyPoolError`.
    """
    budget, c, gen, head = _checked_head(strategy, pool, budget, costs, rng, max_rounds, "select")
    kept = fill_budget(head, c, budget)
    left = budget - float(c[kept].sum())
    rest_mask = np.ones(pool.n, dtype=bool)
    rest_mask[head] = False
    if not (rest_mask.any() and float(c[rest_mask].min()) <= left):
        return kept  # nothing outside the batch fits: skip scoring the tail
    tail = fill_budget(_tail(strategy, pool, head, gen), c, left)
    return np.concatenate([kept, tail]).astype(np.int64)
