"""Uncertainty sampling from the student's token marginals: entropy, least confidence, MNLP.

Per word w (a word-initial subword; specials excluded, unlike the LLMaAA reference code):
- entropy:          H_w = -sum_c p_wc log p_wc
- least confidence: u_w = 1 - max_c p_wc
- neg_log_max:      l_w = -log max_c p_wc   (the greedy sequence's per-word negative log-probability)

A sentence score aggregates its words with mean | max | sum. MNLP (Shen et al. 2018) is the mean of
neg_log_max: -(1/n) sum_w log max_c p_wc, the length-normalised negative log-probability of the argmax
sequence. A 0-word sentence scores 0 under every kind and aggregation.

Everything is vectorised over the whole pool: the marginals are concatenated once (cached on the
`PoolData`) and reduced per sentence with `np.add.reduceat` / `np.maximum.reduceat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from acquisition.base import PoolData, QueryStrategy, top_k_desc

__all__ = [
    "MNLP",
    "Aggregation",
    "EntropySampling",
    "LeastConfidence",
    "TokenKind",
    "UNCERTAINTY_STRATEGIES",
    "UncertaintySampling",
    "aggregate",
    "token_scores",
    "token_uncertainty",
]

TokenKind = Literal["entropy", "least_confidence", "neg_log_max"]
Aggregation = Literal["mean", "max", "sum"]
_KINDS: tuple[str, ...] = get_args(TokenKind)
_AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def _check_option(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def token_scores(probs: np.ndarray, kind: TokenKind) -> np.ndarray:
    """Per-token uncertainty for probabilities of shape (..., n_labels); returns shape (...)."""
    _check_option("kind", kind, _KINDS)
    probs = np.asarray(probs)
    if probs.shape[-1] == 0:  # e.g. the (0, 0) stand-in for an empty pool
        return np.zeros(probs.shape[:-1])
    if kind == "entropy":
        # max(p, tiny) makes 0·log 0 = 0 without a warning or a NaN.
        safe = np.maximum(probs, np.finfo(probs.dtype).tiny)
        return -np.sum(probs * np.log(safe), axis=-1)
    top = probs.max(axis=-1)
    if kind == "least_confidence":
        return 1.0 - top
    return -np.log(np.maximum(top, np.finfo(probs.dtype).tiny))


def aggregate(values: np.ndarray, lengths: np.ndarray, aggregation: Aggregation) -> np.ndarray:
    """Reduce a flat per-token array into one value per sentence; 0-length sentences give 0.

    `values` is the concatenation of the sentences' tokens in order and `lengths` their token counts.
    """
    _check_option("aggregation", aggregation, _AGGREGATIONS)
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != values.shape[0]:
        raise ValueError(f"lengths sum to {int(lengths.sum())} but there are {values.shape[0]} token values")
    out = np.zeros(lengths.shape[0], dtype=np.float64)
    nonempty = lengths > 0
    if not nonempty.any():
        return out
    # reduceat misbehaves on empty segments (it returns the next element), so reduce only over the
    # starts of non-empty sentences: each such segment then runs exactly to the next non-empty start.
    starts = (np.cumsum(lengths) - lengths)[nonempty]
    vals = values.astype(np.float64, copy=False)
    if aggregation == "max":
        out[nonempty] = np.maximum.reduceat(vals, starts)
    else:
        sums = np.add.reduceat(vals, starts)
        out[nonempty] = sums / lengths[nonempty] if aggregation == "mean" else sums
    return out


def token_uncertainty(
    marginals: Sequence[np.ndarray] | PoolData, kind: TokenKind, aggregation: Aggregation = "mean"
) -> np.ndarray:
    """One uncertainty value per sentence, (n,) float64: token scores of `kind` reduced by `aggregation`.

    Accepts the raw list of (n_words, n_labels) marginals or a `PoolData` (which caches the concatenation).
    """
    _check_option("kind", kind, _KINDS)
    _check_option("aggregation", aggregation, _AGGREGATIONS)
    pool = marginals if isinstance(marginals, PoolData) else PoolData(
        ids=[str(i) for i in range(len(marginals))], marginals=marginals
    )
    flat, lengths = pool.flat_marginals
    return aggregate(token_scores(flat, kind), lengths, aggregation)


class UncertaintySampling(QueryStrategy):
    """Top-k sentences by aggregated token uncertainty (ties: lower pool index first)."""

    name = "uncertainty"
    kind: TokenKind = "entropy"

    def __init__(self, aggregation: Aggregation = "mean") -> None:
        _check_option("aggregation", aggregation, _AGGREGATIONS)
        self.aggregation: Aggregation = aggregation

    @property
    def needs_marginals(self) -> bool:
        return True

    def scores(self, pool: PoolData) -> np.ndarray:
        pool.require_marginals()
        return token_uncertainty(pool, self.kind, self.aggregation)

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        return top_k_desc(self.scores(pool), k)


class EntropySampling(UncertaintySampling):
    """Maximum token entropy (LLMaAA's `entropy`; the reference averages, or sums for CoNLL03)."""

    name = "entropy"
    kind: TokenKind = "entropy"


class LeastConfidence(UncertaintySampling):
    """Least confidence, 1 - max p per word (LLMaAA's best strategy, Table 1)."""

    name = "least_confidence"
    kind: TokenKind = "least_confidence"


class MNLP(UncertaintySampling):
    """Maximum normalised log-probability (Shen et al. 2018): -(1/n) sum_w log max_c p_wc by default.

    `aggregation="sum"` gives the unnormalised sequence NLL (favours long sentences), `"max"` the
    least likely single word.
    """

    name = "mnlp"
    kind: TokenKind = "neg_log_max"


# Kept importable for old callers; to ask whether a strategy needs the student, use its
# `needs_marginals` / `needs_student` property instead (issue 13).
UNCERTAINTY_STRATEGIES: dict[str, type[UncertaintySampling]] = {
    cls.name: cls for cls in (EntropySampling, LeastConfidence, MNLP)
}
