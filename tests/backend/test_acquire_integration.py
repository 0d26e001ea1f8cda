"""`acquire` against a real Label Studio 1.23.2: the queue really follows the acquisition order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.acquire import acquire_round
from backend.labelstudio import connect, iter_tasks
from backend.llm_labels import LLMLabelStore
from backend.settings import Settings
from backend.setup_project import setup_project
from llmaaa.services import LabelStudioConfig, Service
from tests.conftest import BC5CDR_LABELS
from training.data import load_split

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(label_studio: LabelStudioConfig, fake_llm: Service, bc5cdr_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Settings]]:
    ls = connect(label_studio.url, label_studio.token)
    settings = Settings(llmaaa_data_dir=tmp_path_factory.mktemp("acq-state"), openai_base_url=fake_llm.url,
                        openai_api_key="sk-acq", llm_model="simulated-llm", label_studio_url=label_studio.url,
                        label_studio_api_key=label_studio.token, redis_url="")
    report = setup_project(ls, settings, "it: acquisition", BC5CDR_LABELS, bc5cdr_dir / "dev.jsonl", 30, None)
    yield report.project_id, settings


def next_task(cfg: LabelStudioConfig, pid: int) -> dict:
    resp = httpx.get(f"{cfg.url}/api/projects/{pid}/next", headers={"Authorization": f"Token {cfg.token}"})
    resp.raise_for_status()
    return resp.json()


def test_next_serves_tasks_in_acquisition_order_with_llm_spans(
    label_studio: LabelStudioConfig, project: tuple[int, Settings], bc5cdr_dir: Path
) -> None:
    pid, settings = project
    ls = connect(label_studio.url, label_studio.token)
    report = acquire_round(ls, pid, settings, strategy="kmeans", batch=6, progress=False, seed=3)
    assert report.round == 1 and report.model_version == "acq-r1" and report.uploaded == 6
    project_now = ls.projects.get(id=pid)
    assert project_now.model_version == "acq-r1" and project_now.sampling == "Uncertainty sampling"
    gold = {ex.text: ex for ex in load_split(bc5cdr_dir / "dev.jsonl", limit=40)}
    served = []
    for expected in report.order:
        task = next_task(label_studio, pid)
        served.append(task["id"])
        (pred,) = [p for p in task["predictions"] if p["model_version"] == "acq-r1"]
        text = task["data"]["text"]
        got = {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in pred["result"]}
        assert {(s.start, s.end, s.label) for s in gold[text].spans} <= got  # the LLM's spans (noise 0)
        # Submitting moves the queue on (and is what an annotator does).
        ls.annotations.create(id=task["id"], result=pred["result"])
        assert task["id"] == expected
    assert served == report.order


def test_rerunning_a_round_never_duplicates_predictions(
    label_studio: LabelStudioConfig, project: tuple[int, Settings]
) -> None:
    pid, settings = project
    ls = connect(label_studio.url, label_studio.token)
    first = acquire_round(ls, pid, settings, strategy="random", batch=5, progress=False, seed=1)
    second = acquire_round(ls, pid, settings, strategy="random", batch=5, progress=False, seed=2)
    assert second.round == first.round + 1 and second.stale_deleted >= 5
    preds = ls.predictions.list(project=pid)
    acq = [p for p in preds if p.model_version.startswith("acq-r")]
    assert {p.model_version for p in acq} == {second.model_version}
    per_task = [p.task for p in acq]
    # One prediction per task: the round's 5 first, then every other unannotated task with LLM spans
    # (earlier rounds' too) carried over after them; verified tasks are never re-queued.
    verified = {t["id"] for t in iter_tasks(ls, pid) if t.get("annotations")}
    labelled = set(LLMLabelStore(settings.llmaaa_data_dir, pid).all())
    assert len(per_task) == len(set(per_task)) and set(per_task) == labelled - verified
    assert set(first.order) - set(second.order) - verified <= set(per_task)
    scores = sorted(p.score for p in acq)
    assert len(set(scores)) == len(scores) and 0.0 <= scores[0] and scores[-1] < 1.0
    assert {p.task for p in acq if p.score < 0.5} == set(second.order)


def test_uncertainty_strategy_without_a_student_is_a_clear_error(
    label_studio: LabelStudioConfig, project: tuple[int, Settings]
) -> None:
    pid, settings = project
    from acquisition.base import MissingPoolDataError

    with pytest.raises(MissingPoolDataError, match="trained student"):
        acquire_round(connect(label_studio.url, label_studio.token), pid, settings, strategy="least_confidence",
                      batch=3, progress=False)
