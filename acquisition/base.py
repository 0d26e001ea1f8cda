"""The acquisition contract: what a strategy is given (`PoolData`) and what it must return.

`acquisition` knows the student's outputs as plain arrays and nothing else (no torch, no Label Studio):
per pool sentence, token marginals over word-initial subwords (specials excluded, label 0 = "O") and
an L2-normalised sentence embedding. Strategies return indices into the pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "AcquisitionError",
    "EmptyPoolError",
    "MissingPoolDataError",
    "PoolData",
    "PoolExhaustedError",
    "QueryStrategy",
    "as_generator",
    "check_k",
]

# Rows of a softmax sum to 1; a looser tolerance would let raw logits through unnoticed.
_ROW_SUM_ATOL = 1e-3
_PROB_ATOL = 1e-6
_T = TypeVar("_T")


class AcquisitionError(Exception):
    """Base class for the errors a strategy raises about the pool it was given."""


class EmptyPoolError(AcquisitionError):
    """The pool has no items, so nothing can be selected."""


class PoolExhaustedError(AcquisitionError):
    """More items were requested than the pool holds."""

    def __init__(self, requested: int, available: int) -> None:
        self.requested = requested
        self.available = available
        super().__init__(f"requested k={requested} items but the pool holds only {available}")


class MissingPoolDataError(AcquisitionError):
    """The strategy needs a `PoolData` field (marginals, embeddings) that is None."""


def _finite_float_array(name: str, value: object, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    numeric = np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    if arr.dtype == object or not numeric:
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclass(frozen=True, kw_only=True, eq=False)
class PoolData:
    """Everything a strategy may look at for the n unlabeled pool items, validated on construction.

    - `ids`: n unique item ids (Label Studio task ids as strings, sentence ids...).
    - `marginals`: n arrays of shape (n_words, n_labels), rows are probability distributions over
      labels (label 0 = "O"); a 0-word sentence is a (0, n_labels) array. Needed by uncertainty.
    - `embeddings`: (n, d) sentence embeddings (the student gives L2-normalised ones). Needed by
      k-means, coreset and the hybrids.
    - `labeled_embeddings`: (m, d) embeddings of the already-labeled items, so coverage-based
      strategies do not re-pick regions that are already covered. None or m = 0 means nothing labeled.
    - `suspect_scores`: (n,) in [0, 1], higher = more likely a wrong LLM label (see `acquisition.suspect`).
    - `mc_marginals`: n arrays of shape (passes, n_words, n_labels): the word marginals from `passes` >= 2
      stochastic forward passes (MC dropout on the classification head, `training.mc_dropout`). Every
      sentence has the same number of passes; n_words and n_labels match `marginals` when both are
      given. Needed by BALD.
    """

    ids: Sequence[str]
    marginals: Sequence[np.ndarray] | None = None
    embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    suspect_scores: np.ndarray | None = None
    mc_marginals: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(set(self.ids)) != n:
            raise ValueError("ids must be unique")
        # frozen dataclass: normalised arrays are written back through object.__setattr__.
        if self.marginals is not None:
            self._validate_marginals(n)
        if self.embeddings is not None:
            emb = _finite_float_array("embeddings", self.embeddings, 2)
            if emb.shape[0] != n:
                raise ValueError(f"embeddings has {emb.shape[0]} rows but there are {n} ids")
            object.__setattr__(self, "embeddings", emb)
        if self.labeled_embeddings is not None and np.asarray(self.labeled_embeddings).size == 0:
            # Nothing labeled yet, whatever shape the empty batch came in ((0, d), (0,), []).
            object.__setattr__(self, "labeled_embeddings", None)
        if self.labeled_embeddings is not None:
            lab = _finite_float_array("labeled_embeddings", self.labeled_embeddings, 2)
            if self.embeddings is not None and lab.shape[1] != self.embeddings.shape[1]:
                raise ValueError(
                    f"labeled_embeddings has dimension {lab.shape[1]} but embeddings has "
                    f"{self.embeddings.shape[1]}"
                )
            object.__setattr__(self, "labeled_embeddings", lab)
        if self.suspect_scores is not None:
            sus = _finite_float_array("suspect_scores", self.suspect_scores, 1)
            if sus.shape[0] != n:
                raise ValueError(f"suspect_scores has {sus.shape[0]} values but there are {n} ids")
            if sus.size and (sus.min() < 0.0 or sus.max() > 1.0):
                raise ValueError("suspect_scores must lie in [0, 1]")
            object.__setattr__(self, "suspect_scores", sus)
        if self.mc_marginals is not None:
            self._validate_mc_marginals(n)

    def _validate_marginals(self, n: int) -> None:
        marginals = self.marginals
        assert marginals is not None
        if len(marginals) != n:
            raise ValueError(f"marginals has {len(marginals)} sentences but there are {n} ids")
        n_labels: int | None = None
        arrays: list[np.ndarray] = []
        for i, m in enumerate(marginals):
            a = np.asarray(m)
            if a.size == 0 and a.ndim != 2:
                a = a.reshape(0, 0)  # a 0-word sentence given as np.array([]) is still a 0-word sentence
            if a.ndim != 2:
                raise ValueError(f"marginals[{i}] must be 2-D (n_words, n_labels), got shape {a.shape}")
            if a.shape[0] > 0:
                if n_labels is None:
                    n_labels = a.shape[1]
                elif a.shape[1] != n_labels:
                    raise ValueError(
                        f"marginals[{i}] has {a.shape[1]} labels, earlier sentences have {n_labels}"
                    )
            arrays.append(a)
        if n_labels is not None and n_labels < 2:
            raise ValueError(f"marginals need at least 2 labels (O plus one entity tag), got {n_labels}")
        object.__setattr__(self, "marginals", arrays)
        flat, lengths = self.flat_marginals
        if flat.size:
            if flat.dtype.kind not in "fbiu":
                raise ValueError(f"marginals must be numeric probabilities, got dtype {flat.dtype}")
            if not np.issubdtype(flat.dtype, np.floating):
                flat = flat.astype(np.float64)  # e.g. one-hot int rows: valid, but log/finfo need floats
                self.__dict__["flat_marginals"] = (flat, lengths)  # replace the cached concatenation
            if not np.all(np.isfinite(flat)):
                raise ValueError("marginals must be finite probabilities (NaN/inf found)")
            if flat.min() < -_PROB_ATOL or flat.max() > 1.0 + _PROB_ATOL:
                raise ValueError("marginals must be probabilities in [0, 1] (got logits?)")
            sums = flat.sum(axis=1)
            if not np.allclose(sums, 1.0, atol=_ROW_SUM_ATOL):
                worst = int(np.argmax(np.abs(sums - 1.0)))
                raise ValueError(f"every marginals row must sum to 1; a row sums to {sums[worst]:.4f}")

    def _validate_mc_marginals(self, n: int) -> None:
        mc = self.mc_marginals
        assert mc is not None
        if len(mc) != n:
            raise ValueError(f"mc_marginals has {len(mc)} sentences but there are {n} ids")
        passes: int | None = None
        n_labels: int | None = None
        arrays: list[np.ndarray] = []
        # Shapes per sentence (cheap); values once, on the concatenation (flat_mc_marginals).
        for i, m in enumerate(mc):
            a = np.asarray(m)
            if a.ndim != 3:
                raise ValueError(f"mc_marginals[{i}] must be 3-D (passes, n_words, n_labels), got shape {a.shape}")
            if passes is None:
                passes = a.shape[0]
                if passes < 2:
                    raise ValueError(f"mc_marginals need at least 2 passes, got {passes}")
            elif a.shape[0] != passes:
                raise ValueError(f"mc_marginals[{i}] has {a.shape[0]} passes, earlier sentences have {passes}")
            if self.marginals is not None and a.shape[1] != self.marginals[i].shape[0]:
                raise ValueError(f"mc_marginals[{i}] has {a.shape[1]} words but marginals[{i}] has "
                                 f"{self.marginals[i].shape[0]}")
            if a.shape[1] > 0:
                if n_labels is None:
                    n_labels = a.shape[2]
                elif a.shape[2] != n_labels:
                    raise ValueError(f"mc_marginals[{i}] has {a.shape[2]} labels, earlier sentences have {n_labels}")
            arrays.append(a)
        if n_labels is not None and n_labels < 2:
            raise ValueError(f"mc_marginals need at least 2 labels (O plus one entity tag), got {n_labels}")
        if self.marginals is not None and n_labels is not None:
            flat, _ = self.flat_marginals
            if flat.size and flat.shape[1] != n_labels:
                raise ValueError(f"mc_marginals have {n_labels} labels but marginals have {flat.shape[1]}")
        object.__setattr__(self, "mc_marginals", arrays)
        flat_mc = self.flat_mc_marginals
        if flat_mc.size:
            if flat_mc.dtype.kind not in "fiu":
                raise ValueError(f"mc_marginals must be numeric probabilities, got dtype {flat_mc.dtype}")
            if not np.all(np.isfinite(flat_mc)):
                raise ValueError("mc_marginals must be finite probabilities (NaN/inf found)")
            if flat_mc.min() < -_PROB_ATOL or flat_mc.max() > 1.0 + _PROB_ATOL:
                raise ValueError("mc_marginals must be probabilities in [0, 1] (got logits?)")
            if not np.allclose(flat_mc.sum(axis=-1), 1.0, atol=_ROW_SUM_ATOL):
                raise ValueError("every mc_marginals row must sum to 1")

    @cached_property
    def flat_mc_marginals(self) -> np.ndarray:
        """All sentences' MC passes concatenated along the words: (passes, total_words, n_labels)."""
        mc = self.require_mc_marginals()
        nonempty = [m for m in mc if m.shape[1] > 0]
        if not nonempty:
            return np.zeros((mc[0].shape[0] if mc else 2, 0, 2))
        return np.concatenate(nonempty, axis=1)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n(self) -> int:
        return len(self.ids)

    @cached_property
    def flat_marginals(self) -> tuple[np.ndarray, np.ndarray]:
        """All word rows concatenated (total_words, n_labels) and the per-sentence word counts (n,).

        Computed once per pool, so several strategies over the same pool concatenate only once.
        """
        if self.marginals is None:
            raise MissingPoolDataError("this strategy needs PoolData.marginals, which is None")
        lengths = np.fromiter((m.shape[0] for m in self.marginals), dtype=np.int64, count=len(self.marginals))
        nonempty = [m for m in self.marginals if m.shape[0] > 0]
        if not nonempty:
            return np.zeros((0, 2)), lengths
        return np.concatenate(nonempty, axis=0), lengths

    def memo(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """`compute()` once per pool and key; the pool is immutable, so derived values stay valid."""
        store: dict[Hashable, Any] = self.__dict__.setdefault("_memo", {})
        if key not in store:
            store[key] = compute()
        return store[key]

    def require_marginals(self) -> Sequence[np.ndarray]:
        if self.marginals is None:
            raise MissingPoolDataError("this strategy needs PoolData.marginals, which is None")
        return self.marginals

    def require_mc_marginals(self) -> Sequence[np.ndarray]:
        if self.mc_marginals is None:
            raise MissingPoolDataError(
                "this strategy needs PoolData.mc_marginals (MC-dropout passes, see training.mc_dropout), "
                "which is None")
        return self.mc_marginals

    def require_embeddings(self) -> np.ndarray:
        if self.embeddings is None:
            raise MissingPoolDataError("this strategy needs PoolData.embeddings, which is None")
        return self.embeddings


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """None means seed 0: selection is reproducible by default (same pool, same batch)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def check_k(k: int, n: int) -> int:
    """Validate a batch size against a pool size: ValueError, EmptyPoolError, PoolExhaustedError."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if n == 0:
        raise EmptyPoolError("the pool is empty: nothing to select")
    if k > n:
        raise PoolExhaustedError(k, n)
    return k


class QueryStrategy(ABC):
    """Picks k pool items to label next.

    Subclasses implement `_select` (and `scores` when they have per-item scores); `select` does the
    argument checks and verifies the result, so every strategy has the same guarantees: exactly k
    unique int64 indices into the pool, most valuable first, deterministic for a given rng seed.
    """

    name: str = "base"

    @property
    def needs_marginals(self) -> bool:
        """True when `select` reads `PoolData.marginals`, i.e. it needs a trained student."""
        return False

    @property
    def needs_mc_marginals(self) -> bool:
        """True when `select` reads `PoolData.mc_marginals` (several stochastic passes of the student)."""
        return False

    @property
    def needs_embeddings(self) -> bool:
        """True when `select` reads `PoolData.embeddings`."""
        return False

    @property
    def needs_student(self) -> bool:
        """True when the strategy cannot run before a student is trained (marginals of either kind)."""
        return self.needs_marginals or self.needs_mc_marginals

    def select(self, pool: PoolData, k: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        k = check_k(k, pool.n)
        idx = np.asarray(self._select(pool, k, as_generator(rng)), dtype=np.int64)
        # A broken strategy must fail here, not silently under-fill a Label Studio batch.
        if idx.shape != (k,) or np.unique(idx).size != k or idx.min() < 0 or idx.max() >= pool.n:
            raise RuntimeError(f"{type(self).__name__} returned an invalid selection for k={k}, n={pool.n}")
        return idx

    @abstractmethod
    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        """Return exactly k unique indices; arguments are already validated (1 <= k <= n)."""

    def scores(self, pool: PoolData) -> np.ndarray | None:
        """Per-item informativeness (n,), higher = more informative; None for order-free strategies."""
        return None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


def top_k_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first; ties go to the lower index (deterministic)."""
    n = scores.shape[0]
    if k < n // 4:
        # argpartition keeps this O(n) for big pools; the boundary value's ties are then resolved by
        # taking every item at least as good as the k-th and stable-sorting that small set.
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
        order = cand[np.argsort(-scores[cand], kind="stable")]
        return order[:k]
    return np.argsort(-scores, kind="stable")[:k]
