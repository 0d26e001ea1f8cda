"""Constructed pools with known answers for the acquisition tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from acquisition.base import PoolData

PoolFactory = Callable[..., PoolData]


def _make_pool(
    marginals: Sequence[np.ndarray] | None = None,
    embeddings: np.ndarray | None = None,
    labeled_embeddings: np.ndarray | None = None,
    suspect_scores: np.ndarray | None = None,
    n: int | None = None,
) -> PoolData:
    if n is None:
        n = len(marginals) if marginals is not None else len(embeddings) if embeddings is not None else 0
    return PoolData(
        ids=[f"s{i}" for i in range(n)],
        marginals=marginals,
        embeddings=embeddings,
        labeled_embeddings=labeled_embeddings,
        suspect_scores=suspect_scores,
    )


@pytest.fixture(scope="session")
def make_pool() -> PoolFactory:
    return _make_pool


def clusters(
    n_clusters: int = 5, per_cluster: int = 20, d: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters: centers 10 apart on coordinate axes, noise 0.05. Returns (x, cluster_id)."""
    rng = np.random.default_rng(seed)
    centers = 10.0 * np.eye(max(n_clusters, d))[:n_clusters, :d]
    ids = np.repeat(np.arange(n_clusters), per_cluster)
    x = centers[ids] + 0.05 * rng.standard_normal((ids.size, d))
    return x, ids


@pytest.fixture(scope="session")
def clustered() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return clusters


def random_marginals(n: int, n_labels: int = 5, max_words: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Softmax marginals with 0..max_words words per sentence (so some sentences are empty)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        logits = 3.0 * rng.standard_normal((int(rng.integers(0, max_words + 1)), n_labels))
        p = np.exp(logits - logits.max(axis=1, keepdims=True)) if logits.size else logits
        out.append(p / p.sum(axis=1, keepdims=True) if p.size else np.zeros((0, n_labels)))
    return out


@pytest.fixture(scope="session")
def random_marg() -> Callable[..., list[np.ndarray]]:
    return random_marginals
