"""The backend against a real Label Studio 1.23.2, the simulated LLM and real HTTP, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.labelstudio import connect, iter_tasks
from backend.settings import Settings
from backend.setup_project import setup_project
from llmaaa.services import LabelStudioConfig, Service
from tests.conftest import BC5CDR_LABELS, start_backend, start_fake_llm
from training.data import load_split

pytestmark = pytest.mark.integration
N_TASKS = 12


@pytest.fixture(scope="module")
def backend(fake_llm: Service, label_studio: LabelStudioConfig,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    d = tmp_path_factory.mktemp("backend")
    svc = start_backend(d, fake_llm.url, label_studio, d / "state")
    try:
        yield svc
    finally:
        svc.stop()


def retrieve_predictions(ls: Any, project_id: int) -> None:
    """The Data Manager action that makes Label Studio call /predict for every task lacking one."""
    ls.actions.with_raw_response.create(id="retrieve_tasks_predictions", project=project_id,
                                        selected_items={"all": True, "excluded": []})


def predictions_by_task(ls: Any, project_id: int) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for p in ls.predictions.list(project=project_id):
        out.setdefault(p.task, []).append(p)
    return out


def test_predictions_land_on_the_right_tasks_with_exact_offsets(
    label_studio: LabelStudioConfig, backend: Service, bc5cdr_dir: Path
) -> None:
    ls = connect(label_studio.url, label_studio.token)
    settings = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token)
    report = setup_project(ls, settings, "it: predictions", BC5CDR_LABELS, bc5cdr_dir / "train.jsonl",
                           N_TASKS, backend.url)
    assert report.imported == N_TASKS and report.ml_backend_id is not None and report.webhook_ids
    # The review tab shows llm_label_weight as a number (LS types unrendered data columns as text).
    (view,) = [v for v in ls.views.list(project=report.project_id) if v.id == report.review_view_id]
    assert view.data["columnsDisplayType"] == {"tasks:data.llm_label_weight": "Number"}
    assert view.data["ordering"] == ["tasks:data.llm_label_weight"]
    gold = {ex.id: ex for ex in load_split(bc5cdr_dir / "train.jsonl", limit=N_TASKS + 5)}
    tasks = list(iter_tasks(ls, report.project_id))
    # Two tasks become human-verified: they are the k-NN demo pool and get no LLM prediction after.
    for task in tasks[:2]:
        ex = gold[task["data"]["ref_id"]]
        ls.annotations.create(id=task["id"], result=[
            {"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end], "labels": [s.label]}}
            for s in ex.spans])

    retrieve_predictions(ls, report.project_id)
    setup_version = httpx.post(f"{backend.url}/setup", json={
        "project": f"{report.project_id}.0", "schema": ls.projects.get(id=report.project_id).label_config,
    }).json()["model_version"]
    by_task = predictions_by_task(ls, report.project_id)
    assert len(by_task) >= N_TASKS - 2
    checked = 0
    for task in tasks:
        preds = by_task.get(task["id"], [])
        if task["id"] in {t["id"] for t in tasks[:2]} and not preds:
            continue
        assert len(preds) == 1, f"task {task['id']} has {len(preds)} predictions"
        pred = preds[0]
        assert pred.model_version == setup_version
        text = task["data"]["text"]
        got = {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in pred.result}
        for r in pred.result:
            assert r["value"]["text"] == text[r["value"]["start"]:r["value"]["end"]]
        # Noise 0: the simulated LLM answers the gold entities of *this* task's sentence. Grounding tags
        # every occurrence of a mention, so gold must be contained in what came back.
        expected = {(s.start, s.end, s.label) for s in gold[task["data"]["ref_id"]].spans}
        assert expected <= got, f"task {task['id']}: predictions belong to another text"
        checked += 1
    assert checked >= N_TASKS - 2

    # Asking again adds nothing: the stored version equals /setup's, so Label Studio skips them.
    before = sum(len(v) for v in predictions_by_task(ls, report.project_id).values())
    retrieve_predictions(ls, report.project_id)
    assert sum(len(v) for v in predictions_by_task(ls, report.project_id).values()) == before
    assert httpx.get(f"{backend.url}/versions").json()["versions"] == [setup_version]


def test_failed_llm_calls_store_no_prediction_and_are_retried(
    label_studio: LabelStudioConfig, bc5cdr_dir: Path, tmp_path: Path
) -> None:
    broken = start_fake_llm(bc5cdr_dir, tmp_path, "--noise", "0", "--fail-rate", "1.0")
    backend = start_backend(tmp_path, broken.url, label_studio, tmp_path / "state", LLM_MAX_RETRIES="1")
    try:
        ls = connect(label_studio.url, label_studio.token)
        settings = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token)
        report = setup_project(ls, settings, "it: failures", BC5CDR_LABELS, bc5cdr_dir / "dev.jsonl", 4,
                               backend.url)
        retrieve_predictions(ls, report.project_id)
        assert predictions_by_task(ls, report.project_id) == {}, "a failed call must not become 'no entities'"
        metrics = httpx.get(f"{backend.url}/metrics").text
        assert 'llmaaa_predict_tasks_total{outcome="not_annotated"} 4' in metrics
        log = (backend.log_path.read_text() if backend.log_path else "")
        assert "sk-test-secret-never-logged" not in log
    finally:
        backend.stop()
        broken.stop()
