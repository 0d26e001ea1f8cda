"""BALD (Houlsby et al. 2011) from MC-dropout passes of the student, per word, aggregated per sentence.

For a word w with T stochastic passes p_t (each a distribution over labels):

    BALD_w = H(mean_t p_t) − mean_t H(p_t)

the mutual information between the word's label and the model parameters: high when the passes are
each confident but disagree. It is >= 0 (entropy is concave) and 0 when every pass gives the same
distribution. Shelmanov et al. (2021, "Active learning for sequence tagging with deep pre-trained models
and Bayesian uncertainty estimates") found MC dropout on the classification head alone works as well as
on the whole Transformer, at the price of one encoder pass: `training.mc_dropout.mc_head_marginals`
produces `PoolData.mc_marginals` that way.

The sentence score aggregates its words with mean (default, length-normalised), max or sum, like the
other uncertainty scores. A 0-word sentence scores 0. The per-word values are computed over chunks of
sentences, so memory stays bounded whatever the pool size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from acquisition.base import PoolData, QueryStrategy, top_k_desc
from acquisition.uncertainty import _AGGREGATIONS, Aggregation, _check_option, aggregate

__all__ = ["BALD", "bald_token_scores", "bald_scores"]

# Words per chunk when reducing the passes (T·words·labels floats live at once).
_CHUNK_WORDS = 50_000


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    safe = np.maximum(p, np.finfo(p.dtype).tiny)  # 0·log 0 = 0 without a warning
    return -np.sum(p * np.log(safe), axis=axis)


def bald_token_scores(passes: np.ndarray) -> np.ndarray:
    """Per-word BALD for one sentence's passes (T, n_words, n_labels) → (n_words,), clipped at 0."""
    p = np.asarray(passes)
    if p.ndim != 3:
        raise ValueError(f"passes must be (T, n_words, n_labels), got shape {p.shape}")
    if p.shape[1] == 0 or p.shape[2] == 0:
        return np.zeros(p.shape[1])
    p = p.astype(np.float64, copy=True)  # one buffer, reused in place below
    h_mean = _entropy(p.mean(axis=0))
    plogp = np.maximum(p, np.finfo(np.float64).tiny)
    np.log(plogp, out=plogp)
    plogp *= p
    mean_h = -plogp.sum(axis=2).mean(axis=0)
    # Rounding can leave -1e-17 where every pass agrees; the true value is >= 0.
    return np.maximum(h_mean - mean_h, 0.0)


def _bald_flat(p: np.ndarray) -> np.ndarray:
    """Per-word BALD over a (T, W, L) block, chunked over W so temporaries stay small."""
    out = np.empty(p.shape[1])
    for s in range(0, p.shape[1], _CHUNK_WORDS):
        out[s : s + _CHUNK_WORDS] = bald_token_scores(p[:, s : s + _CHUNK_WORDS])
    return out


def bald_scores(mc_marginals: Sequence[np.ndarray] | PoolData, aggregation: Aggregation = "mean") -> np.ndarray:
    """One BALD value per sentence, (n,), from per-sentence passes arrays (T, n_words, n_labels).

    Accepts the raw list or a `PoolData` (which keeps the concatenation of the passes).
    """
    _check_option("aggregation", aggregation, _AGGREGATIONS)
    pool = mc_marginals if isinstance(mc_marginals, PoolData) else PoolData(
        ids=[str(i) for i in range(len(mc_marginals))], mc_marginals=mc_marginals
    )
    mc = pool.require_mc_marginals()
    lengths = np.fromiter((m.shape[1] for m in mc), dtype=np.int64, count=len(mc))
    return aggregate(_bald_flat(pool.flat_mc_marginals), lengths, aggregation)


class BALD(QueryStrategy):
    """Top-k sentences by aggregated per-word BALD over `PoolData.mc_marginals` (ties: lower index first)."""

    name = "bald"

    def __init__(self, aggregation: Aggregation = "mean") -> None:
        _check_option("aggregation", aggregation, _AGGREGATIONS)
        self.aggregation: Aggregation = aggregation

    @property
    def needs_mc_marginals(self) -> bool:
        return True

    def scores(self, pool: PoolData) -> np.ndarray:
        pool.require_mc_marginals()
        # Kept on the (frozen) pool: a budgeted selection asks for select and scores of one pool.
        return pool.memo(("bald", self.aggregation), lambda: bald_scores(pool, self.aggregation)).copy()

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        return top_k_desc(self.scores(pool), k)
