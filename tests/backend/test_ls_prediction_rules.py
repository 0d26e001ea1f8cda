"""Label Studio 1.23.2's rules about predictions and versions, checked on the real server (docs/predictions.md).

A prediction/version design for issue 11 relies on each of these; if an upgrade changes one, the test
that names it fails before the design silently breaks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend.labeling_config import build_label_config, load_labels_file
from backend.labelstudio import connect
from llmaaa.services import LabelStudioConfig
from tests.conftest import BC5CDR_LABELS

pytestmark = [pytest.mark.integration]

TEXTS = [f"Aspirin {i} caused hypotension in patient {i} ." for i in range(10)]


def region(text: str, surface: str, label: str, score: float | None = None) -> dict[str, Any]:
    start = text.index(surface)
    out: dict[str, Any] = {"from_name": "label", "to_name": "text", "type": "labels",
                           "value": {"start": start, "end": start + len(surface), "text": surface,
                                     "labels": [label]}}
    if score is not None:
        out["score"] = score
    return out


def prediction(task_id: int, version: str, score: float, *regions: dict[str, Any]) -> dict[str, Any]:
    return {"task": task_id, "model_version": version, "score": score, "result": list(regions)}


class Project:
    """A throw-away project with `n` tasks, driven as the admin through the SDK and plain HTTP."""

    def __init__(self, cfg: LabelStudioConfig, n: int) -> None:
        self.ls = connect(cfg.url, cfg.token)
        self.http = httpx.Client(base_url=cfg.url, headers={"Authorization": f"Token {cfg.token}"}, timeout=60)
        config = build_label_config(load_labels_file(BC5CDR_LABELS))
        self.id = int(self.ls.projects.create(title=f"rules {time.time_ns()}", label_config=config).id)
        self.ls.projects.import_tasks(id=self.id, request=[{"text": t, "idx": i} for i, t in enumerate(TEXTS[:n])])
        tasks = sorted(self.ls.tasks.list(project=self.id), key=lambda t: t.id)
        self.ids = [int(t.id) for t in tasks]

    def predict(self, *preds: dict[str, Any]) -> None:
        created = self.ls.projects.import_predictions(id=self.id, request=list(preds))
        assert created.created == len(preds)

    def switch(self, version: str, sampling: str = "Sequential sampling") -> None:
        self.ls.projects.update(id=self.id, model_version=version, sampling=sampling)

    def next(self) -> dict[str, Any]:
        resp = self.http.get(f"/api/projects/{self.id}/next")
        resp.raise_for_status()
        return resp.json()

    def task(self, task_id: int) -> dict[str, Any]:
        return self.http.get(f"/api/tasks/{task_id}", params={"project": self.id}).json()

    def submit(self, task_id: int) -> None:
        self.ls.annotations.create(id=task_id, result=[])

    def serve_all(self) -> list[int]:
        """Serve and submit until the queue is empty: the order an annotator meets."""
        order = []
        while True:
            resp = self.http.get(f"/api/projects/{self.id}/next")
            if resp.status_code == 404:
                return order
            order.append(int(resp.json()["id"]))
            self.submit(order[-1])


@pytest.fixture
def project(label_studio: LabelStudioConfig) -> Iterator[Any]:
    made: list[Project] = []

    def make(n: int = 4) -> Project:
        made.append(Project(label_studio, n))
        return made[-1]

    yield make
    for p in made:
        p.ls.projects.delete(id=p.id)


def test_rule1_stream_and_task_view_show_only_the_projects_model_version(project: Any) -> None:
    p = project(4)
    a, b, c, d = p.ids
    t = TEXTS
    p.predict(prediction(a, "v1", 0.5, region(t[0], "Aspirin", "Chemical")),
              prediction(b, "v2", 0.5, region(t[1], "hypotension", "Disease")),
              prediction(c, "v1", 0.5, region(t[2], "Aspirin", "Chemical")),
              prediction(c, "v2", 0.5, region(t[2], "hypotension", "Disease")))
    p.switch("v2")
    # The labeling stream (sequential: task a first) serves `a` blank although it has a v1 prediction.
    served = p.next()
    assert served["id"] == a and served["predictions"] == []
    # A task opened from the Data Manager (GET /api/tasks/<id>) gets *every* version; the labeling UI then
    # picks what to show (tests/e2e). No /predict call happens: LS asks the backend only for tasks with none.
    assert sorted(x["model_version"] for x in p.task(c)["predictions"]) == ["v1", "v2"]
    assert [x["model_version"] for x in p.task(a)["predictions"]] == ["v1"]
    # The Data Manager list itself still carries every version (columns "Predictions", model versions).
    listed = {int(x["id"]): x for x in p.http.get("/api/tasks", params={"project": p.id, "fields": "all"})
              .json()["tasks"]}
    assert sorted(x["model_version"] for x in listed[c]["predictions"]) == ["v1", "v2"]
    # `predictions_score` (the Data Manager's "Prediction score" column) averages the current version only.
    assert listed[a]["predictions_score"] is None and listed[b]["predictions_score"] == 0.5


def test_rule2_uncertainty_serves_current_version_by_ascending_score_then_the_rest(project: Any) -> None:
    p = project(8)
    ids = p.ids
    p.predict(prediction(ids[0], "v2", 0.5), prediction(ids[1], "v2", 0.1), prediction(ids[2], "v2", 0.9),
              prediction(ids[3], "v1", 0.0), prediction(ids[4], "v1", 0.0), prediction(ids[5], "v1", 0.0))
    p.switch("v2", "Uncertainty sampling")
    order = p.serve_all()
    assert order[:3] == [ids[1], ids[0], ids[2]]
    # Tasks without a current-version prediction (old version or none at all) all come after.
    assert sorted(order[3:]) == sorted(ids[3:])


def test_rule3_several_predictions_of_one_version_are_all_served_and_rank_by_the_lowest(project: Any) -> None:
    p = project(3)
    a, b, c = p.ids
    t = TEXTS
    p.predict(prediction(a, "v2", 0.6, region(t[0], "Aspirin", "Chemical")),
              prediction(a, "v2", 0.05, region(t[0], "hypotension", "Disease")),
              prediction(b, "v2", 0.1), prediction(c, "v2", 0.2))
    p.switch("v2", "Uncertainty sampling")
    served = p.next()
    assert served["id"] == a  # ranked by its lowest score (0.05), through the join
    assert sorted(x["score"] for x in served["predictions"]) == [0.05, 0.6]  # both reach the labeling UI


def test_rule4_task_score_and_region_scores_are_independent(project: Any) -> None:
    p = project(1)
    t = TEXTS[0]
    p.predict(prediction(p.ids[0], "v2", 0.25, region(t, "Aspirin", "Chemical", 0.93),
                         region(t, "hypotension", "Disease", 0.41)))
    p.switch("v2")
    pred = p.task(p.ids[0])["predictions"][0]
    assert pred["score"] == 0.25
    assert [r["score"] for r in pred["result"]] == [0.93, 0.41]
    # import_predictions validates the task score (outside [0, 1] is dropped), not the region scores.
    created = p.ls.projects.import_predictions(id=p.id, request=[prediction(p.ids[0], "v3", 1.5)])
    assert created.created == 0


def test_rule5_task_data_fields_update_per_task_and_keep_json_types(project: Any) -> None:
    p = project(3)
    a, b, _ = p.ids
    before = p.ls.tasks.get(id=a).data
    # PATCH replaces `data` as a whole: send every field, or the others are lost.
    p.ls.tasks.update(id=a, data={**before, "llm_status": "failed: timeout", "llm_label_weight": 0.25})
    p.ls.tasks.update(id=b, data={"llm_status": "annotated"})
    assert p.ls.tasks.get(id=a).data == {**before, "llm_status": "failed: timeout", "llm_label_weight": 0.25}
    assert p.ls.tasks.get(id=b).data == {"llm_status": "annotated"}  # the text is gone
    assert isinstance(p.ls.tasks.get(id=a).data["llm_label_weight"], float)
    # Importing a task again with its id creates a new task: import is no bulk update.
    p.ls.projects.import_tasks(id=p.id, request=[{"id": a, "data": {**before, "llm_status": "x"}}])
    assert len(list(p.ls.tasks.list(project=p.id))) == 4
    # The Data Manager types every data column that the label config does not use as "Unknown"/"String",
    # whatever the JSON type (data_manager/functions.py get_all_columns): hence the "str" badge.
    columns = {c["id"]: c for c in p.http.get("/api/dm/columns", params={"project": p.id}).json()["columns"]}
    assert columns["text"]["type"] == "String"
    assert columns.get("idx", {}).get("type") in ("Unknown", "String")


def test_rule6_start_training_answer_is_label_studios_own_empty_body(label_studio: LabelStudioConfig,
                                                                    project: Any) -> None:
    from flask import Flask, jsonify, request

    from llmaaa.services import serve_in_thread

    seen: list[dict[str, Any]] = []
    app = Flask("train-probe")

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "UP"})

    @app.post("/setup")
    def setup() -> Any:
        return jsonify({"model_version": "probe"})

    @app.post("/webhook")
    def webhook() -> Any:
        seen.append(request.get_json())
        return jsonify({"status": "queued", "job": "job-123", "message": "retrain queued"}), 201

    p = project(1)
    with serve_in_thread(app) as url:
        ml = p.ls.ml.create(project=p.id, url=url, title="probe")
        resp = p.http.post(f"/api/ml/{ml.id}/train")
        assert seen and seen[-1]["action"] == "START_TRAINING"
        # The Start Training dialog prints this body ("Response: {}"): the backend's answer never reaches it.
        assert resp.status_code == 200 and resp.content in (b"", b"{}")
        # The toggle "Start model training on annotation submission" is min_annotations_to_start_training:
        # off by default; when on, every Nth annotation makes LS call train() -> START_TRAINING too.
        assert p.http.get(f"/api/projects/{p.id}").json()["start_training_on_annotation_update"] is False
        before = len(seen)
        p.submit(p.ids[0])
        starts = [e for e in seen[before:] if e.get("action") == "START_TRAINING"]
        assert starts == []  # toggle off: no START_TRAINING (the project webhook still gets ANNOTATION_*)
        assert any(e.get("action") == "ANNOTATION_CREATED" for e in seen[before:])
        p.http.patch(f"/api/projects/{p.id}", json={"start_training_on_annotation_update": True})
        before = len(seen)
        p.ls.annotations.create(id=p.ids[0], result=[])
        # Toggle on: the save also calls train(), i.e. one more START_TRAINING per submission.
        assert [e.get("action") for e in seen[before:]].count("START_TRAINING") == 1
