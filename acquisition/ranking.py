"""Turn a selection order into Label Studio prediction scores.

Label Studio's Data Manager serves tasks by ascending prediction score, so the first selected item
must get the lowest value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_scores"]


def rank_scores(order: np.ndarray, n: int, tail_scores: np.ndarray | None = None) -> np.ndarray:
    """(n,) unique values in [0, 1]: position i of `order` gets i/(n−1); unselected items come after.

    Unselected items get the ranks len(order)..n−1: by `tail_scores` descending (higher = more
    informative = served earlier) when given, else by pool index. So every selected item scores
    below every unselected one, all values are distinct, and none is NaN. n = 1 gives [0.0].
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    n = int(n)
    order = np.asarray(order, dtype=np.int64).ravel()
    if order.size and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"order must hold indices in [0, {n})")
    if np.unique(order).size != order.size:
        raise ValueError("order must not repeat an index")
    rest_mask = np.ones(n, dtype=bool)
    rest_mask[order] = False
    rest = np.flatnonzero(rest_mask)
    if tail_scores is not None:
        tail = np.asarray(tail_scores, dtype=np.float64)
        if tail.shape != (n,) or not np.all(np.isfinite(tail)):
            raise ValueError(f"tail_scores must be a finite array of shape ({n},)")
        rest = rest[np.argsort(-tail[rest], kind="stable")]
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.concatenate([order, rest])] = np.arange(n)
    return ranks / max(n - 1, 1)
