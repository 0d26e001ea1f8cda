"""`select_tasks` with a word budget: what `llmaaa acquire --budget-words` selects, suspects included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acquisition import PoolData, get_strategy
from backend.acquire import needs_marginals, select_tasks

TEXTS = ["one", "two words", "three words here", "a b c d", "e f g h i", "x y"]


def _pool(suspects: np.ndarray | None = None) -> PoolData:
    rng = np.random.default_rng(0)
    marginals = [rng.dirichlet(np.ones(3), size=len(t.split())) for t in TEXTS]
    return PoolData(ids=[str(i) for i in range(len(TEXTS))], marginals=marginals,
                    embeddings=rng.standard_normal((len(TEXTS), 4)), suspect_scores=suspects)


def test_a_word_budget_selects_what_fits_in_strategy_order() -> None:
    pool = _pool()
    lc = get_strategy("least_confidence")
    ranking = np.argsort(-lc.scores(pool), kind="stable").tolist()
    picks = select_tasks(pool, lc, batch=50, suspect_fraction=0.0, seed=0, budget_words=7, texts=TEXTS)
    words = [len(TEXTS[i].split()) for i in picks]
    assert sum(words) <= 7 and picks == [i for i in ranking if i in picks]
    left = 7 - sum(words)
    assert all(len(TEXTS[i].split()) > left for i in range(len(TEXTS)) if i not in picks)
    # Without a budget the batch is still `batch` tasks.
    assert len(select_tasks(pool, lc, batch=3, suspect_fraction=0.0, seed=0)) == 3


def test_suspects_share_the_word_budget() -> None:
    pool = _pool(suspects=np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.9]))
    picks = select_tasks(pool, get_strategy("random"), batch=50, suspect_fraction=0.5, seed=1, budget_words=6,
                         texts=TEXTS)
    assert sum(len(TEXTS[i].split()) for i in picks) <= 6
    # With fraction 0.5 every second slot is a suspect's: the 2-word suspect is among the first two picks.
    assert 5 in picks[:2]


def test_a_word_budget_needs_the_texts_and_bald_needs_a_student() -> None:
    with pytest.raises(ValueError, match="needs the pool's texts"):
        select_tasks(_pool(), get_strategy("random"), 5, 0.0, 0, budget_words=5)
    assert needs_marginals(get_strategy("bald")) and not needs_marginals(get_strategy("kmeans"))


def test_the_retrain_jobs_round_uses_the_word_budget_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import backend.acquire
    from backend.composition import Services
    from backend.retrain import next_round
    from backend.settings import Settings

    seen: dict[str, object] = {}

    def fake_round(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(backend.acquire, "acquire_round", fake_round)
    monkeypatch.setenv("ACQUISITION_BUDGET_WORDS", "300")
    services = Services(Settings(llmaaa_data_dir=tmp_path))
    assert next_round(None, 1, services, None, None) == {"error": "stop here"}  # type: ignore[arg-type]
    assert seen["budget_words"] == 300
    monkeypatch.setenv("ACQUISITION_BUDGET_WORDS", "0")
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(llmaaa_data_dir=tmp_path)


def test_an_unknown_acquisition_strategy_fails_at_startup_with_the_valid_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from backend.settings import Settings

    monkeypatch.setenv("ACQUISITION_STRATEGY", "least_confidense")
    with pytest.raises(ValueError, match="unknown acquisition strategy 'least_confidense'; valid: random, "):
        Settings(llmaaa_data_dir=tmp_path)
    monkeypatch.setenv("ACQUISITION_STRATEGY", "bald")
    assert Settings(llmaaa_data_dir=tmp_path).acquisition_strategy == "bald"


def test_llmaaa_acquire_without_strategy_uses_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI passes no default of its own: acquire_round is the one place ACQUISITION_STRATEGY applies."""
    import backend.acquire
    import backend.settings
    from llmaaa import backend_cli
    from llmaaa.cli import build_parser

    seen: list[str] = []

    def recording_get_strategy(name: str, **options: object) -> object:
        seen.append(name)
        raise ValueError("stop here")  # before any Label Studio call

    monkeypatch.setattr(backend.acquire, "get_strategy", recording_get_strategy)
    monkeypatch.setattr(backend_cli, "_ls_from_settings", lambda: None)
    monkeypatch.setenv("ACQUISITION_STRATEGY", "bald")
    backend.settings.get_settings.cache_clear()
    try:
        for argv, expected in ((["acquire", "--project", "1"], "bald"),
                               (["acquire", "--project", "1", "--strategy", "random"], "random")):
            args = build_parser().parse_args(argv)
            assert args.func(args) == 2  # the ValueError is reported as an error, exit code 2
            assert seen.pop() == expected
    finally:
        backend.settings.get_settings.cache_clear()
