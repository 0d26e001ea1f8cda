"""Issue 11 item 6: training progress (epoch and step) reaches `llmaaa status` and /metrics, with no stale
series, while the job runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from backend.app import collect_projects
from backend.metrics import Registry
from backend.retrain import JobReporter, train_student
from backend.state import ProjectState
from tests.backend.loop_fakes import LABEL_CONFIG, FakeServices, KnownAnswersLLM


class FakeJob:
    id = "job-1"

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.saved = 0

    def save_meta(self) -> None:
        self.saved += 1


def test_reporter_replaces_the_whole_job_record_and_throttles_steps(tmp_path: Path) -> None:
    services = FakeServices(tmp_path, KnownAnswersLLM({}))
    job = FakeJob()
    report = JobReporter(services, 7, job, min_interval_s=3600)
    report.start(annotations_since_last=5)
    report("training", 0.2, epoch=1, max_epochs=10, step=8, total_steps=400)
    report("training", 0.3, epoch=2, max_epochs=10, step=80, total_steps=400)  # within the interval: dropped
    state = ProjectState(tmp_path, 7).read()
    assert state["job"]["epoch"] == 1 and state["job"]["step"] == 8 and job.meta["stage"] == "training"
    report("evaluating", 0.75)  # a stage change always goes through, and drops the step fields
    job_record = ProjectState(tmp_path, 7).read()["job"]
    assert job_record["stage"] == "evaluating" and "epoch" not in job_record and "step" not in job_record


def test_the_first_step_update_goes_through_soon_after_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.retrain

    monkeypatch.setattr(backend.retrain.time, "monotonic", lambda: 5.0)  # 5 s after boot
    report = JobReporter(FakeServices(tmp_path, KnownAnswersLLM({})), 7, FakeJob(), min_interval_s=3600)
    report("training", 0.2, epoch=1, max_epochs=10, step=8, total_steps=400)
    assert ProjectState(tmp_path, 7).read()["job"]["step"] == 8  # was dropped: 5 s "since" a last update at 0.0


def test_metrics_show_epoch_and_step_while_training_and_nothing_stale_after(tmp_path: Path) -> None:
    state = ProjectState(tmp_path, 3)
    model = SimpleNamespace(state=state, project_id=3, serving_student=lambda: None,
                            llm_labels=SimpleNamespace(failures=lambda: {1: "x"}))
    models = SimpleNamespace(all=lambda: [model])
    reg = Registry()
    reg.add_collector(lambda r: collect_projects(r, models))  # type: ignore[arg-type]
    state.update(job={"stage": "training", "progress": 0.4, "epoch": 3, "max_epochs": 10, "step": 120,
                      "total_steps": 400})
    text = reg.render()
    assert 'llmaaa_retrain_epoch{project="3"} 3.0' in text and 'llmaaa_retrain_step{project="3"} 120.0' in text
    assert 'stage="training"' in text and 'llmaaa_llm_failed_tasks{project="3"} 1.0' in text
    state.update(job={"stage": "finished", "progress": 1.0})
    text = reg.render()
    assert 'stage="training"' not in text and "llmaaa_retrain_epoch{" not in text


def test_training_reports_epochs_and_steps_to_the_job(tmp_path: Path) -> None:
    from training.data import Example
    from training.spans import Span

    services = FakeServices(tmp_path, KnownAnswersLLM({}), retrain_max_epochs=2, retrain_patience=1)
    schema = services.schema(LABEL_CONFIG)
    text = "aspirin causes headache ."
    ex = Example("1", text, [Span(0, 7, "Chemical"), Span(15, 23, "Disease")])
    seen: list[dict[str, Any]] = []
    train_student([ex] * 4, [ex] * 2, schema, services.settings.model_copy(update={"retrain_recipe_name": "plain"}),
                  lambda stage, fraction, **details: seen.append({"stage": stage, "fraction": fraction, **details}))
    epochs = [s["epoch"] for s in seen if s.get("epoch") is not None]
    assert seen and epochs and max(epochs) >= 1 and all(s["max_epochs"] == 2 for s in seen if "max_epochs" in s)
    assert all(0.1 <= s["fraction"] <= 0.75 for s in seen)
