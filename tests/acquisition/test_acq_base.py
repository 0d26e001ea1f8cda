"""PoolData validation, the k / pool-size errors, and the guarantees `QueryStrategy.select` enforces."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.base import (
    EmptyPoolError,
    MissingPoolDataError,
    PoolData,
    PoolExhaustedError,
    QueryStrategy,
    as_generator,
    check_k,
    top_k_desc,
)
from acquisition.strategies import available_strategies, get_strategy

P = np.array([[0.9, 0.1], [0.5, 0.5]])


def test_pool_data_accepts_a_valid_pool() -> None:
    pool = PoolData(
        ids=["a", "b"],
        marginals=[P, np.zeros((0, 2))],
        embeddings=np.eye(2),
        labeled_embeddings=np.ones((3, 2)),
        suspect_scores=np.array([0.0, 1.0]),
    )
    assert len(pool) == pool.n == 2
    flat, lengths = pool.flat_marginals
    assert flat.shape == (2, 2) and lengths.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": ["a", "a"]}, "unique"),
        ({"ids": ["a", "b"], "marginals": [P]}, "1 sentences but there are 2 ids"),
        ({"ids": ["a"], "marginals": [np.array([0.5, 0.5])]}, "2-D"),
        ({"ids": ["a", "b"], "marginals": [P, np.full((1, 3), 1 / 3)]}, "3 labels"),
        ({"ids": ["a"], "marginals": [np.array([[np.nan, 1.0]])]}, "NaN"),
        ({"ids": ["a"], "marginals": [np.array([[2.0, -1.0]])]}, "probabilities"),
        ({"ids": ["a"], "marginals": [np.array([[0.2, 0.2]])]}, "sum to 1"),
        ({"ids": ["a"], "marginals": [np.array([[1.0]])]}, "at least 2 labels"),
        ({"ids": ["a", "b"], "embeddings": np.ones((3, 4))}, "3 rows but there are 2 ids"),
        ({"ids": ["a"], "embeddings": np.ones(4)}, "2-D"),
        ({"ids": ["a"], "embeddings": np.array([[np.nan, 0.0]])}, "NaN"),
        ({"ids": ["a"], "embeddings": np.array([["x", "y"]])}, "numeric"),
        ({"ids": ["a"], "embeddings": np.ones((1, 4)), "labeled_embeddings": np.ones((2, 3))}, "dimension 3"),
        ({"ids": ["a"], "labeled_embeddings": np.array([[np.inf, 0.0]])}, "NaN"),
        ({"ids": ["a", "b"], "suspect_scores": np.array([0.5])}, "1 values but there are 2"),
        ({"ids": ["a"], "suspect_scores": np.array([1.5])}, r"\[0, 1\]"),
    ],
)
def test_pool_data_rejects_bad_input_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolData(**kwargs)


def test_empty_sentence_given_as_empty_1d_array_is_a_zero_word_sentence() -> None:
    pool = PoolData(ids=["a", "b"], marginals=[np.array([]), P])
    assert pool.flat_marginals[1].tolist() == [0, 2]


def test_integer_one_hot_marginals_are_accepted_as_probabilities() -> None:
    pool = PoolData(ids=["a"], marginals=[np.array([[1, 0], [0, 1]])])
    assert pool.flat_marginals[0].dtype == np.float64
    with pytest.raises(ValueError, match="numeric"):
        PoolData(ids=["a"], marginals=[np.array([["x", "y"]])])


@pytest.mark.parametrize("empty", [np.zeros((0, 2)), np.zeros(0), []])
def test_no_labeled_rows_means_nothing_labeled(empty: object) -> None:
    pool = PoolData(ids=["a"], embeddings=np.ones((1, 2)), labeled_embeddings=empty)  # type: ignore[arg-type]
    assert pool.labeled_embeddings is None


def test_missing_fields_raise_missing_pool_data_error() -> None:
    pool = PoolData(ids=["a"])
    with pytest.raises(MissingPoolDataError, match="marginals"):
        get_strategy("entropy").select(pool, 1)
    with pytest.raises(MissingPoolDataError, match="embeddings"):
        get_strategy("coreset").select(pool, 1)


def test_check_k_errors() -> None:
    with pytest.raises(ValueError, match="positive"):
        check_k(0, 5)
    with pytest.raises(ValueError, match="positive"):
        check_k(-2, 5)
    with pytest.raises(TypeError):
        check_k(1.5, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_k(True, 5)
    with pytest.raises(EmptyPoolError):
        check_k(1, 0)
    with pytest.raises(PoolExhaustedError, match=r"k=7 .* only 3") as info:
        check_k(7, 3)
    assert (info.value.requested, info.value.available) == (7, 3)
    assert check_k(np.int64(3), 3) == 3


@pytest.mark.parametrize("name", available_strategies())
def test_every_strategy_raises_the_pool_errors(name: str) -> None:
    strategy = get_strategy(name)
    empty = PoolData(ids=[], marginals=[], embeddings=np.zeros((0, 2)))
    with pytest.raises(EmptyPoolError):
        strategy.select(empty, 1)
    pool = PoolData(ids=["a", "b"], marginals=[P, P], embeddings=np.eye(2))
    with pytest.raises(PoolExhaustedError, match="k=3.*only 2"):
        strategy.select(pool, 3)
    with pytest.raises(ValueError, match="positive"):
        strategy.select(pool, 0)


def test_as_generator() -> None:
    g = np.random.default_rng(5)
    assert as_generator(g) is g
    assert as_generator(None).integers(1000) == np.random.default_rng(0).integers(1000)
    assert as_generator(3).integers(1000) == np.random.default_rng(3).integers(1000)
    with pytest.raises(TypeError):
        as_generator("seed")  # type: ignore[arg-type]


class _Broken(QueryStrategy):
    name = "broken"

    def __init__(self, result: list[int]) -> None:
        self.result = result

    def _select(self, pool: PoolData, k: int, rng: np.random.Generator) -> np.ndarray:
        return np.array(self.result)


@pytest.mark.parametrize("result", [[0, 0], [0], [0, 1, 2], [0, 5], [-1, 0]])
def test_select_refuses_an_invalid_result_from_a_strategy(result: list[int]) -> None:
    pool = PoolData(ids=["a", "b", "c"])
    with pytest.raises(RuntimeError, match="invalid selection"):
        _Broken(result).select(pool, 2)


def test_order_free_strategy_has_no_scores() -> None:
    assert _Broken([0]).scores(PoolData(ids=["a"])) is None
    assert "result=[0]" in repr(_Broken([0]))


@pytest.mark.parametrize("n,k", [(10, 1), (10, 3), (10, 10), (1000, 7)])
def test_top_k_desc_is_descending_with_index_tie_break(n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    scores = rng.integers(0, 4, size=n).astype(float)  # many ties
    got = top_k_desc(scores, k)
    expected = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
    assert got.tolist() == expected
