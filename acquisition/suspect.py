"""Blend likely-wrong LLM labels into the human review order.

The reweighting student gives every LLM-labelled sentence a learned weight; a low weight means the gold
meta set disagrees with that label. `suspect_score` (in [0, 1], higher = more suspect, e.g. 1 − weight
rescaled) turns that into a review priority. A human's time is split between two streams:

- the acquisition stream: the strategy's order (most valuable first);
- the suspect stream: items with suspect_score >= min_score, most suspect first (ties: lower index).

`mix_suspects` interleaves them so that suspects take a `fraction` of the positions, spread evenly:
position i (0-based) is a suspect slot iff floor((i+1)·fraction) > floor(i·fraction). So every prefix
of length L holds floor(L·fraction) suspects while both streams last (fraction 0.25: positions 3, 7,
11, ...). An item in both streams appears once, at its earlier slot. When one stream runs out the
other fills the rest. Nothing is dropped: the result holds every index of both streams; truncate it
to the review budget (`SuspectMix` does that for a fixed batch of k).
"""

from __future__ import annotations

import math

import numpy as np

from acquisition.base import PoolData, QueryStrategy

__all__ = ["SuspectMix", "mix_suspects", "suspect_stream"]


def _check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, int | float) and math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return float(fraction)


def suspect_stream(suspect_scores: np.ndarray, min_score: float = 0.5) -> np.ndarray:
    """Indices with suspect_score >= min_score, most suspect first (ties: lower index first)."""
    s = np.asarray(suspect_scores, dtype=np.float64)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise ValueError("suspect_scores must be a finite 1-D array")
    idx = np.flatnonzero(s >= min_score)
    return idx[np.argsort(-s[idx], kind="stable")]


def mix_suspects(
    order_indices: np.ndarray, suspect_scores: np.ndarray, fraction: float, *, min_score: float = 0.5
) -> np.ndarray:
    """Interleave the acquisition order with the suspect stream; see the module doc for the exact rule.

    `order_indices`: unique indices into the pool, most valuable first. `suspect_scores`: (n,) over the
    whole pool. Returns unique int64 indices: all of `order_indices` plus every suspect.
    """
    fraction = _check_fraction(fraction)
    order = np.asarray(order_indices, dtype=np.int64).ravel()
    scores = np.asarray(suspect_scores, dtype=np.float64)
    n = scores.shape[0] if scores.ndim == 1 else -1
    if order.size and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"order_indices must index the {n} suspect_scores")
    if np.unique(order).size != order.size:
        raise ValueError("order_indices must be unique")
    suspects = suspect_stream(scores, min_score)
    out: list[int] = []
    seen: set[int] = set()
    a = b = 0  # read positions in the acquisition and suspect streams
    slot = 0
    while a < order.size or b < suspects.size:
        want_suspect = math.floor((slot + 1) * fraction) > math.floor(slot * fraction)
        if b < suspects.size and (want_suspect or a >= order.size):
            item = int(suspects[b])
            b += 1
        else:
            item = int(order[a])
            a += 1
        if item in seen:
            continue  # already placed from the other stream: the slot goes to the next item
        seen.add(item)
        out.append(item)
        slot += 1
    return np.asarray(out, dtype=np.int64)


class SuspectMix(QueryStrategy):
    """Wrap a strategy: its k-batch with a `fraction` of the slots given to the most suspect items.

    Uses `pool.suspect_scores`; without them (or with no item >= min_score) it is the wrapped strategy.
    """

    def __init__(self, base: QueryStrategy, fraction: float = 0.2, min_score: float = 0.5) -> None:
        if not isinstance(base, QueryStrategy):
            raise TypeError(f"base must be a QueryStrategy, got {type(base).__name__}")
        self.base = base
        self.fraction = _check_fraction(fraction)
        self.min_score = float(min_score)
        self.name = f"{base.name}+suspects"

    @property
    def needs_marginals(self) -> bool:
        return self.base.needs_marginals

    @property
    def needs_mc_marginals(self) -> bool:
        return self.base.needs_mc_marginals

    @property
    def needs_embeddings(self) -> bool:
        return self.base.needs_embeddings

    def scores(self, pool: PoolData) -> np.ndarray | None:
        return self.base.scores(pool)

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        order = self.base.select(pool, k, rng)
        if pool.suspect_scores is None:
            return order
        return mix_suspects(order, pool.suspect_scores, self.fraction, min_score=self.min_score)[:k]
