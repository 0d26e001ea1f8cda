"""`llmaaa simulate` options: teacher kinds, recipes and training options, label budgets, resuming.

The trainer is replaced by a stand-in (as in test_simulate_strategies.py), so the loop runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import training.trainer
from llmaaa.cli import main
from llmaaa.simulate import (
    LEGACY_TRAIN,
    SimulationConfig,
    build_train_config,
    parse_train_options,
    round0_cache_file,
    run_simulation,
)
from training.data import Example
from training.trainer import TrainResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_simulate_strategies import TextDeterminedStudent  # noqa: E402


class Crash(RuntimeError):
    pass


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Records what each round trained on and with which config; `crash_at` makes that call fail."""
    state: dict[str, Any] = {"sets": [], "configs": [], "crash_at": None}

    def fake_train(train_set: list[Example], gold: list[Example], config: Any, **_: Any) -> TrainResult:
        if state["crash_at"] is not None and len(state["sets"]) == state["crash_at"]:
            raise Crash("killed")
        state["sets"].append([(ex.id, [s.key() for s in ex.spans]) for ex in train_set])
        state["configs"].append(config)
        return TrainResult(TextDeterminedStudent(), {"best_epoch": 1, "train_time_s": 0.0})  # type: ignore[arg-type]

    monkeypatch.setattr(training.trainer, "train", fake_train)
    return state


def config(tmp_path: Path, data: Path, **kw: Any) -> SimulationConfig:
    base: dict[str, Any] = {"data": data, "out": tmp_path, "strategy": "least_confidence", "gold_size": 8,
                            "pool_size": 80, "test_size": 10, "seed": 4, "teacher_noise": 0.5}
    return SimulationConfig(**{**base, **kw})


def test_train_options_are_coerced_to_the_field_types() -> None:
    opts = parse_train_options(["max_epochs=40", "encoder_lr=2e-5", "reweight=false", "early-stop=loss",
                                "gold_weight=1"])
    assert opts == {"max_epochs": 40, "encoder_lr": 2e-5, "reweight": False, "early_stop": "loss", "gold_weight": 1.0}
    assert isinstance(opts["gold_weight"], float) and opts["reweight"] is False
    assert parse_train_options(["reweight=ON"]) == {"reweight": True}


@pytest.mark.parametrize(("pair", "message"), [
    ("max_epoch=3", "unknown training option 'max_epoch'"),
    ("max_epochs", "KEY=VALUE"),
    ("max_epochs=many", "wants a int"),
    ("reweight=perhaps", "wants a bool"),
])
def test_bad_train_options_are_clear_errors(pair: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_train_options([pair])


def test_recipe_then_explicit_values_then_options(tmp_path: Path, bc5cdr_dir: Path) -> None:
    legacy = build_train_config(config(tmp_path, bc5cdr_dir))
    assert (legacy.max_epochs, legacy.patience, legacy.reweight) == (
        LEGACY_TRAIN["max_epochs"], LEGACY_TRAIN["patience"], LEGACY_TRAIN["reweight"])
    plain = build_train_config(config(tmp_path, bc5cdr_dir, recipe="plain", train_options={"max_epochs": 40}))
    assert plain.reweight is False and plain.max_epochs == 40 and plain.seed == 4
    # a recipe's own epoch budget is kept unless one is given (LEGACY_TRAIN is only for no recipe)
    recipe = build_train_config(config(tmp_path, bc5cdr_dir, recipe="recipe"))
    assert recipe.max_epochs == training.trainer.TrainConfig.from_recipe("recipe").max_epochs
    assert build_train_config(config(tmp_path, bc5cdr_dir, recipe="l2rw", patience=7)).patience == 7
    with pytest.raises(ValueError, match="unknown recipe 'fancy'"):
        build_train_config(config(tmp_path, bc5cdr_dir, recipe="fancy"))


def test_cli_rejects_a_bad_option_before_doing_anything(tmp_path: Path, bc5cdr_dir: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "never"
    assert main(["simulate", "--data", str(bc5cdr_dir), "--out", str(out), "--train-option", "epochs=3"]) == 2
    assert main(["simulate", "--data", str(bc5cdr_dir), "--out", str(out), "--recipe", "fancy"]) == 2
    assert not out.exists()
    assert "unknown training option 'epochs'" in caplog.text and "unknown recipe 'fancy'" in caplog.text


def test_round0_cache_key_includes_teacher_kind_recipe_and_options(tmp_path: Path) -> None:
    base = config(tmp_path, Path("/data"), round0_cache=tmp_path / "cache", budgets=[10, 20])
    key = round0_cache_file(base)
    variants = [dataclasses.replace(base, teacher_kind="systematic"), dataclasses.replace(base, recipe="plain"),
                dataclasses.replace(base, train_options={"max_epochs": 3}), dataclasses.replace(base, seed=5)]
    assert len({key, *(round0_cache_file(v) for v in variants)}) == 5
    # what happens after round 0 does not matter
    assert round0_cache_file(dataclasses.replace(base, budgets=[10, 50, 90], strategy="random")) == key
    # an explicit value equal to the legacy default is the same training
    assert round0_cache_file(dataclasses.replace(base, max_epochs=LEGACY_TRAIN["max_epochs"])) == key


def test_budgets_set_the_round_schedule(trained: dict[str, Any], tmp_path: Path, bc5cdr_dir: Path) -> None:
    cfg = config(tmp_path, bc5cdr_dir, budgets=[10, 16, 30], teacher_kind="systematic", recipe="plain")
    assert (cfg.seed_size, cfg.rounds, cfg.round_sizes()) == (10, 2, [6, 14])
    results = run_simulation(cfg)
    assert [r["labels"] for r in results["rounds"]] == [10, 16, 30]
    assert [len(s) for s in trained["sets"]] == [10, 16, 30]
    assert all(c.reweight is False for c in trained["configs"])  # the "plain" recipe was used
    assert results["teacher"]["kind"] == "systematic" and results["config"]["reweight"] is False
    assert results["train_config"]["reweight"] is False
    assert all(0 < r["teacher_f1"] < 1 for r in results["rounds"])
    for bad in ([], [10, 10], [0, 5], [30, 20]):
        with pytest.raises(ValueError, match="budgets"):
            config(tmp_path, bc5cdr_dir, budgets=bad)


def test_an_interrupted_run_resumes_from_its_last_round(trained: dict[str, Any], tmp_path: Path,
                                                        bc5cdr_dir: Path) -> None:
    full = run_simulation(config(tmp_path / "full", bc5cdr_dir, budgets=[10, 16, 30, 40], resume=True))
    full_sets = list(trained["sets"])
    trained["sets"].clear()
    trained["crash_at"] = 2  # the third round's training is killed
    cut = config(tmp_path / "cut", bc5cdr_dir, budgets=[10, 16, 30, 40], resume=True)
    with pytest.raises(Crash):
        run_simulation(cut)
    progress = json.loads((tmp_path / "cut" / "progress.json").read_text())
    assert progress["next_round"] == 2 and len(progress["labeled"]) == 30
    trained["crash_at"] = None
    trained["sets"].clear()
    resumed = run_simulation(cut)
    assert [len(s) for s in trained["sets"]] == [30, 40]  # rounds 0 and 1 were not trained again
    assert trained["sets"] == full_sets[2:]  # same labels, same selections
    keys = ("labels", "f1", "teacher_f1")
    assert [[r[k] for k in keys] for r in resumed["rounds"]] == [[r[k] for k in keys] for r in full["rounds"]]
    assert resumed["teacher"] == full["teacher"]
    # stop_at: a stage that ends with its progress saved, then the rest of the run
    trained["sets"].clear()
    staged = config(tmp_path / "staged", bc5cdr_dir, budgets=[10, 16, 30, 40], resume=True, stop_at=16)
    partial = run_simulation(staged)
    assert partial["stopped_at"] == 16 and not (tmp_path / "staged" / "results.json").exists()
    finished = run_simulation(dataclasses.replace(staged, stop_at=None))
    assert [len(s) for s in trained["sets"]] == [10, 16, 30, 40]
    assert [r["f1"] for r in finished["rounds"]] == [r["f1"] for r in full["rounds"]]
    # a progress file of another configuration is not used
    trained["sets"].clear()
    run_simulation(dataclasses.replace(cut, seed=5))
    assert [len(s) for s in trained["sets"]] == [10, 16, 30, 40]


def test_every_recipe_early_stops_on_the_same_held_out_verified_sentences(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bc5cdr_dir: Path
) -> None:
    calls: list[tuple[str, set[str], set[str]]] = []  # (recipe's gold weight, meta ids, dev ids) per round

    def fake_train(train_set: list[Example], meta: list[Example], config: Any,
                   dev_examples: list[Example] | None = None, **_: Any) -> TrainResult:
        assert dev_examples is not None
        calls.append((str(config.gold_weight), {ex.id for ex in meta}, {ex.id for ex in dev_examples}))
        return TrainResult(TextDeterminedStudent(), {"best_epoch": 1, "train_time_s": 0.0})  # type: ignore[arg-type]

    monkeypatch.setattr(training.trainer, "train", fake_train)
    for recipe in ("plain", "l2rw", "recipe"):
        run_simulation(config(tmp_path / recipe, bc5cdr_dir, budgets=[10, 16], recipe=recipe, gold_size=10))
    assert len(calls) == 6 and {gold for gold, _, _ in calls} == {"0.0", "0.5"}
    metas, devs = {frozenset(m) for _, m, _ in calls}, {frozenset(d) for _, _, d in calls}
    assert len(devs) == len(metas) == 1  # one split for every recipe and round
    (meta,), (dev,) = metas, devs
    assert len(dev) == 3 and len(meta) == 7 and meta.isdisjoint(dev)


def test_a_progress_file_of_another_early_stopping_split_is_not_resumed(
    trained: dict[str, Any], tmp_path: Path, bc5cdr_dir: Path
) -> None:
    other_split = config(tmp_path, bc5cdr_dir, budgets=[10, 16, 30], resume=True, stop_at=16,
                         train_options={"dev_fraction": 0.2})
    run_simulation(other_split)
    assert (tmp_path / "progress.json").exists() and [len(s) for s in trained["sets"]] == [10, 16]
    trained["sets"].clear()
    run_simulation(dataclasses.replace(other_split, train_options={}, stop_at=None))
    assert [len(s) for s in trained["sets"]] == [10, 16, 30]  # started afresh: the split is part of the key


def test_llm_teacher_is_loaded_lazily_and_failed_calls_are_not_annotated(
    trained: dict[str, Any], tmp_path: Path, bc5cdr_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, bc5cdr_dir, budgets=[10, 20], teacher_kind="llm")
    monkeypatch.setitem(sys.modules, "llmaaa.simulation.llm_teacher", None)  # the module is absent
    with pytest.raises(ValueError, match="llm_teacher"):
        run_simulation(cfg)

    class LLMTeacherError(RuntimeError):
        pass

    class LLMTeacher:  # the shape of llmaaa.simulation.llm_teacher.LLMTeacher
        def __init__(self, gold: list[Example], labels: list[str], *, base_url: str | None = None) -> None:
            assert labels and len(gold) == 8
            self.calls = 0

        def label(self, ex: Example) -> Example:
            self.calls += 1
            if self.calls % 3 == 0:  # every third call fails
                raise LLMTeacherError(ex.id)
            return Example(ex.id, ex.text, [], ex.tokens)

    monkeypatch.setitem(sys.modules, "llmaaa.simulation.llm_teacher",
                        types.SimpleNamespace(LLMTeacher=LLMTeacher, LLMTeacherError=LLMTeacherError))
    results = run_simulation(cfg)
    assert results["teacher"]["not_annotated"] > 0 and results["teacher"]["kind"] == "llm"
    labels = results["teacher"]["labels"]
    assert labels + results["teacher"]["not_annotated"] == results["teacher"]["calls"]
    assert [len(s) for s in trained["sets"]] == [r["labels"] for r in results["rounds"]]
    assert trained["sets"][-1][-1][1] == []  # an answered sentence with no entities is trained on
    assert results["rounds"][-1]["labels"] == labels < 20
