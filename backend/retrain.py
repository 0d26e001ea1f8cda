"""The retrain job that `llmaaa worker` runs: the closed LLMaAA loop for one Label Studio project.

1. Read the project: tasks with a submitted human annotation are the verified set (meta set, early
   stopping, evaluation, demo pool); tasks the LLM labeled (see `backend.llm_labels`) and no human has
   annotated are the training set.
2. Train the student with meta-learned reweighting against the verified set.
3. Evaluate the student and the LLM on a held-out slice of the verified tasks.
4. Save the model atomically as a new version, then publish it (project state); a failed or killed
   job publishes nothing, so the serving model stays.
5. Write each LLM-labeled task's learned weight into its data (`llm_label_weight`, sortable in the Data
   Manager): a low weight marks a suspect LLM label.
6. Run an acquisition round, which changes the model version Label Studio sees and reorders the queue.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from backend.labeling_config import parse_label_config
from backend.labelstudio import connect, explain, iter_tasks, result_to_spans, submitted_annotation
from backend.llm_labels import LLMLabelStore
from backend.settings import Settings, get_settings
from backend.state import ProjectState
from backend.student import model_store
from training.data import Example

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def held_out(task_id: int, fraction: float) -> bool:
    """A stable, id-based split: the same task is always held out (or not) across retrains."""
    return (zlib.crc32(str(task_id).encode()) % 1000) < fraction * 1000


def retrain_job(project_id: int) -> dict[str, Any]:
    """RQ entry point. Progress goes to the job's meta (rq-dashboard, `llmaaa status`)."""
    import redis
    from rq import get_current_job

    from backend.jobs import claim_start

    settings = get_settings()
    job = get_current_job()
    conn = redis.Redis.from_url(settings.redis_url)
    taken = claim_start(conn, project_id)
    state = ProjectState(settings.llmaaa_data_dir, project_id)

    def progress(stage: str, fraction: float) -> None:
        if job is not None:
            job.meta.update(stage=stage, progress=round(fraction, 3))
            job.save_meta()
        state.update(job={"id": job.id if job else None, "stage": stage, "progress": round(fraction, 3),
                          "updated": time.time()})

    state.update(job={"id": job.id if job else None, "stage": "started", "progress": 0.0,
                      "annotations_since_last": taken, "updated": time.time()})
    try:
        ls = connect(settings.label_studio_url or "", settings.label_studio_api_key.get_secret_value()
                     if settings.label_studio_api_key else "")
        summary = retrain_project(ls, project_id, settings, progress)
    except Exception as exc:
        state.update(job={"id": job.id if job else None, "stage": "failed", "error": str(exc)[:500],
                          "updated": time.time()})
        raise
    state.update(job={"id": job.id if job else None, "stage": "finished", "progress": 1.0, "updated": time.time()},
                 last_retrain=summary)
    return summary


def retrain_project(ls: Any, project_id: int, settings: Settings | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    from training.metrics import entity_scores
    from training.trainer import TrainConfig, train

    settings = settings or get_settings()
    progress_cb = progress or (lambda stage, fraction: None)
    started = time.time()
    stages: list[list[Any]] = []  # [stage, seconds] in pipeline order (a dict would be key-sorted on disk)
    mark = [time.perf_counter(), "reading project"]

    def report(stage: str, fraction: float) -> None:
        # Wall time per stage, for `llmaaa status` and the loop benchmark.
        now = time.perf_counter()
        stages.append([str(mark[1]), round(now - float(mark[0]), 3)])
        mark[0], mark[1] = now, stage.split(" on ")[0]
        progress_cb(stage, fraction)

    progress_cb("reading project", 0.02)
    try:
        project = ls.projects.get(id=project_id)
        tasks = list(iter_tasks(ls, project_id))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading project {project_id}") from exc
    schema = parse_label_config(project.label_config, labels_file=settings.labels_file)
    key = schema.value_key
    verified: list[Example] = []
    task_text: dict[int, str] = {}
    for task in tasks:
        text = (task.get("data") or {}).get(key)
        if not isinstance(text, str):
            continue
        task_text[int(task["id"])] = text
        annotation = submitted_annotation(task)
        if annotation is not None:
            verified.append(Example(str(task["id"]), text, result_to_spans(annotation.get("result"), schema, text)))
    if len(verified) < settings.retrain_min_verified:
        return {"status": "skipped", "reason": f"{len(verified)} verified tasks, need {settings.retrain_min_verified}"}
    verified_ids = {int(ex.id) for ex in verified}
    llm_labels = LLMLabelStore(settings.llmaaa_data_dir, project_id).all()
    train_set = [Example(str(tid), text, spans) for tid, (text, spans) in sorted(llm_labels.items())
                 if tid not in verified_ids and task_text.get(tid) == text]
    held = [ex for ex in verified if held_out(int(ex.id), settings.retrain_holdout_fraction)]
    if len(held) < 2 or len(held) == len(verified):  # too few to split: evaluate on the meta set itself
        held = list(verified)
        meta = list(verified)
    else:
        meta = [ex for ex in verified if ex not in held]
    if settings.retrain_include_verified:
        train_set += meta
    if not train_set:
        return {"status": "skipped", "reason": "no LLM-labeled tasks to train on yet"}

    report(f"training on {len(train_set)} LLM-labeled tasks", 0.1)
    config = TrainConfig(max_epochs=settings.retrain_max_epochs, patience=settings.retrain_patience,
                         reweight=settings.retrain_reweight)
    result = train(train_set, meta, config, labels=schema.values, encoder=settings.student_encoder,
                   progress=False)
    report("evaluating", 0.75)
    student_pred = result.model.predict([ex.text for ex in held])
    student = entity_scores([ex.spans for ex in held], student_pred, [ex.text for ex in held])
    with_llm = [ex for ex in held if int(ex.id) in llm_labels and llm_labels[int(ex.id)][0] == ex.text]
    llm = (entity_scores([ex.spans for ex in with_llm], [llm_labels[int(ex.id)][1] for ex in with_llm],
                         [ex.text for ex in with_llm]) if with_llm else None)
    student_on_llm_subset = (entity_scores([ex.spans for ex in with_llm],
                                           result.model.predict([ex.text for ex in with_llm]),
                                           [ex.text for ex in with_llm]) if with_llm else None)
    metrics = {**result.metrics, "eval": {
        "held_out": len(held), "held_out_is_meta": held == meta, "student": _prf(student),
        "llm": _prf(llm) if llm else None, "llm_eval_tasks": len(with_llm),
        "student_on_llm_tasks": _prf(student_on_llm_subset) if student_on_llm_subset else None}}
    report("saving model", 0.8)
    store = model_store(settings.llmaaa_data_dir, project_id)
    version = store.save(result.model, metrics, result.sentence_weights,
                         {"project": project_id, "train_tasks": len(train_set), "verified_tasks": len(verified)})
    # Published only after the atomic save: a crash before this line leaves the old model serving.
    state = ProjectState(settings.llmaaa_data_dir, project_id)
    compare = student_on_llm_subset or student
    state.update(student_version=version, student_f1=compare["f1"], llm_f1=llm["f1"] if llm else None,
                 student_eval=_prf(student), published_at=time.time())
    report("marking suspect LLM labels", 0.85)
    marked = mark_suspects(ls, tasks, result.sentence_weights, key) if settings.retrain_mark_suspects else 0
    acquisition = None
    if settings.acquisition_batch > 0:
        report("acquisition round", 0.9)
        from backend.acquire import acquire_round

        try:
            acquisition = acquire_round(ls, project_id, settings, settings.acquisition_strategy,
                                        settings.acquisition_batch, progress=False).to_dict()
        except Exception as exc:  # noqa: BLE001 - the new model is published either way
            log.warning("project %s: acquisition round failed after retrain: %s", project_id, exc)
            acquisition = {"error": str(exc)[:300]}
    report("done", 1.0)
    return {"status": "ok", "version": version, "train_tasks": len(train_set), "verified": len(verified),
            "stage_seconds": stages,
            "student": _prf(student), "llm": _prf(llm) if llm else None, "suspects_marked": marked,
            "acquisition": acquisition, "seconds": round(time.time() - started, 1)}


def _prf(scores: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(scores[k]), 4) for k in ("precision", "recall", "f1")}


def mark_suspects(ls: Any, tasks: list[dict[str, Any]], weights: dict[str, float], key: str) -> int:
    """Write `llm_label_weight` (the mean learned weight, relative to the median) into LLM-labeled tasks.

    Reviewers sort the Data Manager by that column, ascending: the LLM labels the meta-learner trusted
    least come first. 1.0 = a typical training sentence; 0 = ignored by the reweighting.
    """
    if not weights:
        return 0
    ordered = sorted(weights.values())
    median = ordered[len(ordered) // 2] or max(ordered) or 1.0
    marked = 0
    for task in tasks:
        w = weights.get(str(task["id"]))
        if w is None:
            continue
        data = dict(task.get("data") or {})
        data["llm_label_weight"] = round(min(1.0, w / median), 4)
        ls.tasks.update(id=task["id"], data=data)
        marked += 1
    return marked
