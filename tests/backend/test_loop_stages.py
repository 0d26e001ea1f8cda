"""The loop's stages on fakes at the SDK boundary: what the annotator meets after each round.

The invariant (docs/predictions.md): at every moment, every unannotated task that has LLM spans shows them
(a prediction at the project's current version), while the queue follows the latest round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.acquire import acquire_round
from backend.labelstudio import LabelStudioError
from backend.project_snapshot import FLAG_EMPTY_UNANNOTATED, ProjectSnapshot, held_out, read_project
from backend.queue_publisher import QueueItem, publish_queue, queue_scores
from backend.retrain import (
    compare_on_held_out,
    early_stopping_fraction,
    mark_suspects,
    meta_and_evaluation,
    training_set,
)
from backend.suspects import relative_weights, suspect_scores
from tests.backend.fake_label_studio import FakeLabelStudio
from tests.backend.loop_fakes import LABEL_CONFIG, FakeServices, KnownAnswersLLM
from training.data import Example
from training.spans import Span

TEXTS = {i: f"Patient {i} received aspirin {i} for headache number {i} ." for i in range(1, 31)}
ANSWERS = {text: [("aspirin", "Chemical"), ("headache", "Disease")] for text in TEXTS.values()}


def region(text: str, word: str, label: str) -> dict[str, Any]:
    start = text.index(word)
    return {"from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": start + len(word), "text": word, "labels": [label]}}


@pytest.fixture
def ls() -> FakeLabelStudio:
    fake = FakeLabelStudio(LABEL_CONFIG)
    for tid, text in TEXTS.items():
        fake.add_task(tid, text)
    return fake


def shown_everywhere(ls: FakeLabelStudio, services: FakeServices) -> list[int]:
    """Unannotated tasks with a recorded LLM label that would open blank (must be none)."""
    labels = services.llm_labels(ls.project.id).all()
    return [tid for tid, row in ls.task_rows.items()
            if not row["annotations"] and tid in labels and ls.shown_prediction(tid) is None]


def test_queue_scores_are_unique_ascending_and_head_first() -> None:
    head, rest = queue_scores(3, 4)
    assert head + rest == sorted(head + rest) and len(set(head + rest)) == 7
    assert max(head) < 0.5 <= min(rest) and max(rest) < 1.0


def test_two_rounds_keep_every_prelabel_and_serve_the_round_head(ls: FakeLabelStudio, tmp_path: Path) -> None:
    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS), knn_k=2)
    first = acquire_round(ls, 1, services.settings, "random", batch=8, progress=False, seed=1, services=services)
    assert ls.project.model_version == "acq-r1" and ls.next_task() == first.order[0]
    for tid in first.order[:3]:  # a human verifies three of the round's tasks
        ls.task_rows[tid]["annotations"] = [{"id": tid, "result": [region(TEXTS[tid], "aspirin", "Chemical")]}]
    second = acquire_round(ls, 1, services.settings, "random", batch=8, progress=False, seed=2, services=services)
    assert ls.project.model_version == "acq-r2"
    # The old code published the batch only: the first round's other 5 tasks opened blank.
    assert second.carried_over == len(set(first.order[3:]) - set(second.order)) > 0
    assert shown_everywhere(ls, services) == []
    assert ls.next_task() == second.order[0]
    assert not [p for p in ls.prediction_rows.values() if p["model_version"] == "acq-r1"]



def test_a_round_picks_only_tasks_the_llm_has_not_labelled_until_none_is_left(ls: FakeLabelStudio,
                                                                              tmp_path: Path) -> None:
    edited = "An edited text about aspirin ."
    services = FakeServices(tmp_path, KnownAnswersLLM({**ANSWERS, edited: [("aspirin", "Chemical")]}), knn_k=0)
    orders = [acquire_round(ls, 1, services.settings, "random", batch=10, progress=False, seed=seed,
                            services=services).order for seed in (1, 2, 3)]
    # The old code drew every round from all unannotated tasks, so rounds re-picked labelled ones.
    assert sorted(tid for order in orders for tid in order) == list(range(1, 31))
    ls.task_rows[5]["data"]["text"] = edited  # a changed text is new to the LLM
    fourth = acquire_round(ls, 1, services.settings, "random", batch=10, progress=False, seed=4, services=services)
    assert fourth.order == [5]
    fifth = acquire_round(ls, 1, services.settings, "random", batch=4, progress=False, seed=5, services=services)
    assert len(fifth.order) == 4  # every task labelled: all are candidates again
    assert shown_everywhere(ls, services) == []

def test_failed_tasks_are_outside_the_queue_and_recorded_as_not_annotated(ls: FakeLabelStudio,
                                                                         tmp_path: Path) -> None:
    failing = [TEXTS[i] for i in range(1, 31)]  # every call fails except those answered below
    llm = KnownAnswersLLM({TEXTS[1]: ANSWERS[TEXTS[1]]}, failing=failing[1:])
    services = FakeServices(tmp_path, llm, knn_k=0)
    report = acquire_round(ls, 1, services.settings, "random", batch=30, progress=False, services=services)
    assert report.order == [1] and report.not_annotated == 29
    store = services.llm_labels(1)
    assert set(store.all()) == {1}  # a failure is never stored as "no entities"
    assert {f.reason for f in store.failures().values()} == {"timeout"} and len(store.failures()) == 29
    assert ls.next_task() == 1


def test_no_task_annotated_leaves_the_previous_version_serving(ls: FakeLabelStudio, tmp_path: Path) -> None:
    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS), knn_k=0)
    first = acquire_round(ls, 1, services.settings, "random", batch=5, progress=False, services=services)
    ls.fail_on.add("projects.import_predictions")
    with pytest.raises(LabelStudioError):
        acquire_round(ls, 1, services.settings, "random", batch=5, progress=False, services=services)
    assert ls.project.model_version == "acq-r1"
    assert all(ls.shown_prediction(tid) is not None for tid in first.order)  # the old queue still serves
    # The failed round's new LLM labels are kept and published by the next round that succeeds.
    ls.fail_on.discard("projects.import_predictions")
    acquire_round(ls, 1, services.settings, "random", batch=5, progress=False, services=services)
    assert shown_everywhere(ls, services) == []


def test_publish_refuses_an_empty_queue(ls: FakeLabelStudio) -> None:
    from tests.backend.loop_fakes import FakeServices as _  # noqa: F401 - same schema source

    schema = FakeServices(Path("/nonexistent"), KnownAnswersLLM({})).schema(LABEL_CONFIG)
    with pytest.raises(LabelStudioError, match="no task has LLM spans"):
        publish_queue(ls, 1, schema, "acq-r1", [], [])
    text = TEXTS[1]
    item = QueueItem(1, text, [Span(text.index("aspirin"), text.index("aspirin") + 7, "Chemical")])
    report = publish_queue(ls, 1, schema, "acq-r1", [item], [item])
    assert report.head == 1 and report.carried_over == 0  # a head task is never queued twice


def test_empty_submission_on_a_never_annotated_task_is_flagged_not_verified(ls: FakeLabelStudio,
                                                                             tmp_path: Path) -> None:
    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS))
    services.llm_labels(1).put(2, TEXTS[2], [], "llm")  # the LLM answered "no entities" on task 2
    ls.task_rows[1]["annotations"] = [{"id": 1, "result": []}]  # served blank after a failure
    ls.task_rows[2]["annotations"] = [{"id": 2, "result": []}]
    snapshot = read_project(ls, 1, services.schema, services.llm_labels(1).all())
    assert snapshot.flagged == {1: FLAG_EMPTY_UNANNOTATED}
    assert [ex.id for ex in snapshot.verified] == ["2"]


def test_held_out_split_is_stable_and_comparison_needs_enough_tasks() -> None:
    ids = list(range(1, 500))
    assert [held_out(i, 0.2) for i in ids] == [held_out(i, 0.2) for i in ids]
    assert 0.15 < np.mean([held_out(i, 0.2) for i in ids]) < 0.25
    verified = [Example(str(i), TEXTS[i], []) for i in range(1, 4)]
    assert meta_and_evaluation(verified, 0.9).evaluation == []  # never an empty meta set

    class Echo:
        def predict(self, texts: list[str]) -> list[list[Span]]:
            return [[] for _ in texts]

    labels = {i: (TEXTS[i], []) for i in range(1, 31)}
    few = compare_on_held_out(Echo(), [Example(str(i), TEXTS[i], []) for i in range(1, 6)], labels, 20)
    assert few["comparable"] is False and "n=5 < 20" in few["reason"]
    enough = compare_on_held_out(Echo(), [Example(str(i), TEXTS[i], []) for i in range(1, 25)], labels, 20)
    assert enough["comparable"] and enough["n"] == 24 and enough["llm_unchanged_share"] == 1.0


def test_a_student_trained_on_verified_tasks_early_stops_on_others_and_evaluation_stays_untouched() -> None:
    from training.trainer import TrainConfig

    verified = [Example(str(i), TEXTS[i], []) for i in range(1, 31)]
    without_dev = meta_and_evaluation(verified, 0.2)
    split = meta_and_evaluation(verified, 0.2, dev_fraction=0.3, seed=42)
    ids = [{ex.id for ex in part} for part in (split.meta, split.dev, split.evaluation)]
    assert split.evaluation == without_dev.evaluation and split.evaluation  # the same held-out tasks
    assert all(ids[i].isdisjoint(ids[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    assert ids[0] | ids[1] == {ex.id for ex in without_dev.meta} and len(ids[1]) == round(0.3 * len(without_dev.meta))
    assert {ex.id for ex in split.demonstrations} == ids[0] | ids[1]  # dev tasks still demonstrate; evaluation not
    # With the meta split in the training set, the dev tasks stay out of it.
    snapshot = ProjectSnapshot(1, None, [], verified=verified)  # type: ignore[arg-type]
    assert {ex.id for ex in training_set(snapshot, {}, split, include_meta=True)} == ids[0]
    # Who needs a dev split: the gold term or training on verified tasks; plain L2RW early-stops on meta.
    assert early_stopping_fraction(TrainConfig.from_recipe("recipe"), include_verified=False) == 0.3
    assert early_stopping_fraction(TrainConfig.from_recipe("plain"), include_verified=True) == 0.3
    assert early_stopping_fraction(TrainConfig.from_recipe("l2rw"), include_verified=False) is None
    with pytest.raises(ValueError, match="no dev"):
        meta_and_evaluation(verified[:1], 0.2, dev_fraction=0.3)


def test_the_retrain_job_trains_on_neither_its_dev_nor_its_evaluation_tasks(
        ls: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.retrain as retrain

    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS))  # the defaults: recipe, verified tasks trained on
    for tid in range(1, 21):
        ls.task_rows[tid]["annotations"] = [{"id": tid, "result": [region(TEXTS[tid], "aspirin", "Chemical")]}]
    for tid in range(21, 31):
        services.llm_labels(1).put(tid, TEXTS[tid], [], "llm")
    seen: dict[str, set[str]] = {}

    class Trained(Exception):
        pass

    def fake_train_student(train_set: list[Example], meta: list[Example], schema: Any, settings: Any,
                           progress: Any, dev: list[Example] | None = None, config: Any = None) -> Any:
        assert config == retrain.train_config(settings)  # the job's one TrainConfig, handed down
        seen.update(train={ex.id for ex in train_set}, meta={ex.id for ex in meta}, dev={ex.id for ex in dev or []})
        raise Trained

    monkeypatch.setattr(retrain, "train_student", fake_train_student)
    with pytest.raises(Trained):
        retrain.retrain_project(ls, 1, services=services)
    evaluation = {str(t) for t in range(1, 21) if held_out(t, services.settings.retrain_holdout_fraction)}
    assert seen["dev"] and evaluation and seen["meta"] <= seen["train"]  # the meta split is trained on here
    assert seen["dev"].isdisjoint(seen["train"] | seen["meta"]) and evaluation.isdisjoint(seen["train"] | seen["dev"])
    assert len(seen["meta"] | seen["dev"] | evaluation) == 20 and {str(t) for t in range(21, 31)} <= seen["train"]


def test_tasks_annotated_during_training_get_no_weight_and_no_queue_slot(
        ls: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.retrain as retrain

    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS), retrain_max_epochs=1, retrain_recipe="l2rw",
                            acquisition_batch=4, knn_k=0)
    for tid in range(1, 21):
        ls.task_rows[tid]["annotations"] = [{"id": tid, "result": [region(TEXTS[tid], "aspirin", "Chemical")]}]
    for tid in range(21, 31):
        text = TEXTS[tid]
        services.llm_labels(1).put(tid, text, [Span(text.index("aspirin"), text.index("aspirin") + 7, "Chemical")],
                                   "llm")
    real_train_student = retrain.train_student
    during = (21, 22)

    def annotators_keep_working(*args: Any, **kwargs: Any) -> Any:
        for tid in during:  # submitted while the student trains
            ls.task_rows[tid]["annotations"] = [{"id": tid, "result": [region(TEXTS[tid], "headache", "Disease")]}]
        return real_train_student(*args, **kwargs)

    monkeypatch.setattr(retrain, "train_student", annotators_keep_working)
    result = retrain.retrain_project(ls, 1, services=services)
    assert result["status"] == "ok" and "error" not in result["acquisition"]
    weighted = {tid for tid, row in ls.task_rows.items() if "llm_label_weight" in row["data"]}
    # The first read saw 21 and 22 unlabeled: they were weighted and could be queued though a human had them.
    # And the round's llm_status PATCH (data replaced whole) erased the weight of the tasks it queued.
    assert weighted == set(range(23, 31))
    assert result["acquisition"]["order"] and not set(during) & set(result["acquisition"]["order"])


def test_training_set_uses_llm_labels_of_unannotated_tasks_with_unchanged_text(ls: FakeLabelStudio,
                                                                                tmp_path: Path) -> None:
    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS))
    ls.task_rows[1]["annotations"] = [{"id": 1, "result": [region(TEXTS[1], "aspirin", "Chemical")]}]
    labels = {1: (TEXTS[1], []), 2: (TEXTS[2], []), 3: ("an older text", [])}
    snapshot = read_project(ls, 1, services.schema, labels)
    split = meta_and_evaluation(snapshot.verified, 0.0)
    assert [ex.id for ex in training_set(snapshot, labels, split, include_meta=False)] == ["2"]
    assert [ex.id for ex in training_set(snapshot, labels, split, include_meta=True)] == ["2", "1"]


def test_reviewer_column_and_suspect_score_share_one_scale(ls: FakeLabelStudio, tmp_path: Path) -> None:
    weights = {"1": 0.05, "2": 0.1, "3": 0.2, "4": 0.0}
    relative = relative_weights(weights)
    assert relative == {"1": 0.6667, "2": 1.0, "3": 1.0, "4": 0.0} or np.isclose(relative["1"], 0.05 / 0.075)
    np.testing.assert_allclose(suspect_scores(["1", "2", "4", "9"], weights),
                               [1 - relative["1"], 0.0, 1.0, 0.0])
    services = FakeServices(tmp_path, KnownAnswersLLM(ANSWERS))
    snapshot = read_project(ls, 1, services.schema, {})
    assert mark_suspects(ls, snapshot, weights) == 4
    value = ls.task_rows[1]["data"]["llm_label_weight"]
    assert isinstance(value, float) and value == round(relative["1"], 4)  # a number, not a string
    snapshot = read_project(ls, 1, services.schema, {})
    assert mark_suspects(ls, snapshot, weights) == 0  # unchanged values are not written again


def test_evaluation_tasks_without_llm_labels_are_asked_once_with_meta_demos(ls: FakeLabelStudio,
                                                                           tmp_path: Path) -> None:
    from backend.project_snapshot import VerifiedSplit
    from backend.retrain import ask_llm_about

    llm = KnownAnswersLLM(ANSWERS)
    services = FakeServices(tmp_path, llm, knn_k=3)
    for tid in range(1, 9):  # humans labelled these first: the LLM never saw them
        ls.task_rows[tid]["annotations"] = [{"id": tid, "result": [region(TEXTS[tid], "aspirin", "Chemical")]}]
    snapshot = read_project(ls, 1, services.schema, {})
    split = VerifiedSplit(meta=snapshot.verified[:5], evaluation=snapshot.verified[5:])
    labels = ask_llm_about(services, snapshot, split, {})
    assert sorted(labels) == [6, 7, 8] and sorted(llm.asked) == sorted(TEXTS[i] for i in (6, 7, 8))
    assert ask_llm_about(services, snapshot, split, labels) is labels  # nothing missing: nothing asked
    assert len(llm.asked) == 3


@given(st.integers(0, 300), st.integers(0, 300))
@settings(max_examples=200, deadline=None)
def test_queue_scores_invariants(n_head: int, n_rest: int) -> None:
    head, rest = queue_scores(n_head, n_rest)
    scores = head + rest
    assert len(head) == n_head and len(rest) == n_rest
    assert scores == sorted(scores) and len(set(scores)) == len(scores)  # unique, head first
    assert all(0.0 <= s < 0.5 for s in head) and all(0.5 <= s < 1.0 for s in rest)  # below a live 1.0
