"""The retrain job that `llmaaa worker` runs: the closed LLMaAA loop for one Label Studio project.

`retrain_project` reads as its stages; each is a function that needs no Label Studio of its own:
1. `read_project`: the tasks (verified, flagged, unlabeled; see backend.project_snapshot); read again after
   training (`reread_project`) for the stages that write to tasks, since annotators kept working.
2. `training_set`: LLM-labelled tasks no human has annotated (plus the meta split when configured).
3. `train_student`: the student, re-weighted against the meta split (training.trainer), early-stopped on the
   dev split when it trains on verified tasks (gold term or RETRAIN_INCLUDE_VERIFIED), else on the meta split.
4. `compare_on_held_out`: student vs LLM on verified tasks neither trained, early-stopped nor took
   demonstrations on; too few → "not enough verified tasks to compare", and the serving source stays.
5. `publish_student`: an atomic save, then the project state points at it (a failed job publishes nothing).
6. `mark_suspects`: each LLM-labelled task's learned weight into its data (`llm_label_weight`), changed
   values only, in parallel; `flag_for_review` marks empty submissions on never-annotated tasks.
7. `acquire_round` with the student in memory and the re-read snapshot: the next round's queue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.composition import Services
from backend.labeling_config import LabelSchema
from backend.labelstudio import update_task_data
from backend.project_snapshot import ProjectSnapshot, VerifiedSplit, held_out, read_project, split_verified
from backend.settings import Settings, get_settings
from backend.student import StudentHandle, model_store
from backend.suspects import relative_weights
from training.data import Example
from training.spans import Span

log = logging.getLogger(__name__)

Progress = Callable[..., None]  # progress(stage, fraction, **details)
LLMLabels = Mapping[int, tuple[str, list[Span]]]

__all__ = ["held_out", "retrain_job", "retrain_project"]


def retrain_job(project_id: int) -> dict[str, Any]:
    """RQ entry point. Progress goes to the job's meta and the project state (`llmaaa status`, /metrics)."""
    import redis
    from rq import get_current_job

    from backend.jobs import claim_start

    services = Services(get_settings())
    job = get_current_job()
    taken = claim_start(redis.Redis.from_url(services.settings.redis_url), project_id)
    reporter = JobReporter(services, project_id, job)
    reporter.start(annotations_since_last=taken)
    try:
        summary = retrain_project(services.label_studio(), project_id, services.settings, reporter,
                                  services=services)
    except Exception as exc:
        reporter.finish("failed", error=str(exc)[:500])
        raise
    reporter.finish("finished", last_retrain=summary)
    return summary


class JobReporter:
    """Writes the job's stage and epoch/step progress where `llmaaa status` and /metrics read it.

    Every write replaces the whole `job` record, so no stale stage or step lingers from an earlier call.
    """

    def __init__(self, services: Services, project_id: int, job: Any, min_interval_s: float = 1.0) -> None:
        self.state = services.state(project_id)
        self.job = job
        self.min_interval_s = min_interval_s
        self._last = -math.inf  # not 0.0: time.monotonic() counts from boot, so the first update could be dropped

    def _write(self, record: dict[str, Any], **extra: Any) -> None:
        record = {"id": self.job.id if self.job else None, **record, "updated": time.time()}
        if self.job is not None:
            self.job.meta.update({k: v for k, v in record.items() if k != "id"})
            self.job.save_meta()
        self.state.update(job=record, **extra)

    def start(self, **details: Any) -> None:
        self._write({"stage": "started", "progress": 0.0, **details})

    def __call__(self, stage: str, fraction: float, **details: Any) -> None:
        now = time.monotonic()
        if details and now - self._last < self.min_interval_s:
            return  # step-level updates are throttled; stage changes always go through
        self._last = now
        self._write({"stage": stage, "progress": round(fraction, 3), **details})

    def finish(self, stage: str, error: str | None = None, **extra: Any) -> None:
        self._write({"stage": stage, "progress": 1.0 if stage == "finished" else None,
                     **({"error": error} if error else {})}, **extra)


@dataclass
class StageTimer:
    """Wall time per stage, in pipeline order (for `llmaaa status` and the loop benchmark)."""

    progress: Progress
    seconds: list[list[Any]] = field(default_factory=list)
    _stage: str = "reading project"
    _since: float = field(default_factory=time.perf_counter)

    def stage(self, name: str, fraction: float) -> None:
        now = time.perf_counter()
        self.seconds.append([self._stage, round(now - self._since, 3)])
        self._stage, self._since = name, now
        self.progress(name, fraction)


def retrain_project(ls: Any, project_id: int, settings: Settings | None = None, progress: Progress | None = None,
                    *, services: Services | None = None) -> dict[str, Any]:
    services = services or Services(settings or get_settings())
    settings = services.settings
    timer = StageTimer(progress or (lambda *a, **k: None))
    started = time.time()
    timer.progress("reading project", 0.02)
    labels = services.llm_labels(project_id).all()
    snapshot = read_project(ls, project_id, services.schema, labels)
    flagged = flag_for_review(ls, snapshot)
    if len(snapshot.verified) < settings.retrain_min_verified:
        return {"status": "skipped", "flagged_for_review": flagged,
                "reason": f"{len(snapshot.verified)} verified tasks, need {settings.retrain_min_verified}"}
    config = train_config(settings)
    try:
        split = meta_and_evaluation(snapshot.verified, settings.retrain_holdout_fraction,
                                    early_stopping_fraction(config, settings.retrain_include_verified), config.seed)
    except ValueError as exc:  # too few verified tasks to hold some out for early stopping
        return {"status": "skipped", "flagged_for_review": flagged, "reason": str(exc)}
    train_set = training_set(snapshot, labels, split, settings.retrain_include_verified)
    if not train_set:
        return {"status": "skipped", "reason": "no LLM-labeled tasks to train on yet"}
    timer.stage(f"training on {len(train_set)} LLM-labeled tasks", 0.1)
    result = train_student(train_set, split.meta, snapshot.schema, settings, timer.progress, dev=split.dev or None,
                           config=config)
    timer.stage("evaluating", 0.75)
    labels = ask_llm_about(services, snapshot, split, labels)
    comparison = compare_on_held_out(result.model, split.evaluation, labels, settings.compare_min_tasks)
    timer.stage("saving model", 0.8)
    student = publish_student(services, project_id, result, comparison,
                              {"train_tasks": len(train_set), "verified_tasks": len(snapshot.verified),
                               "meta_tasks": len(split.meta), "dev_tasks": len(split.dev)})
    timer.stage("re-reading project", 0.82)
    current = reread_project(ls, services, snapshot)
    timer.stage("marking suspect LLM labels", 0.85)
    marked = mark_suspects(ls, current, result.sentence_weights) if settings.retrain_mark_suspects else 0
    acquisition = None
    if settings.acquisition_batch > 0:
        timer.stage("acquisition round", 0.9)
        acquisition = next_round(ls, project_id, services, current, student)
    timer.stage("done", 1.0)
    return {"status": "ok", "version": student.version, "train_tasks": len(train_set),
            "verified": len(snapshot.verified), "flagged_for_review": flagged, "stage_seconds": timer.seconds,
            "comparison": comparison, "suspects_marked": marked, "acquisition": acquisition,
            "seconds": round(time.time() - started, 1)}


def reread_project(ls: Any, services: Services, snapshot: ProjectSnapshot) -> ProjectSnapshot:
    """The project as it is after training, for the stages that write to tasks.

    Training takes minutes and annotators keep working: with the snapshot from before training, a task
    submitted meanwhile was still "unlabeled", so it got an `llm_label_weight` and took a slot in the next
    round's queue. If Label Studio cannot be read now, the first snapshot serves (the old behaviour)."""
    try:
        return read_project(ls, snapshot.project_id, services.schema,
                            services.llm_labels(snapshot.project_id).all())
    except Exception as exc:  # noqa: BLE001 - the new model is published; these stages are best effort
        log.warning("project %s: could not re-read the project after training, using the first read: %s",
                    snapshot.project_id, exc)
        return snapshot


def meta_and_evaluation(verified: list[Example], holdout_fraction: float, dev_fraction: float | None = None,
                        seed: int = 0) -> VerifiedSplit:
    """The evaluation split (held out of training, early stopping and demonstrations), unless it would leave
    the meta set too small to train against; then, with `dev_fraction`, a seeded share of the rest moved to
    `dev` for early stopping (training.trainer.split_meta_dev; ValueError when too few are left for both)."""
    from training.trainer import split_meta_dev

    split = split_verified(verified, holdout_fraction)
    if len(split.meta) < 2:
        split = VerifiedSplit(meta=list(verified), evaluation=[])
    if dev_fraction is None:
        return split
    meta, dev = split_meta_dev(split.meta, dev_fraction, seed)
    return VerifiedSplit(meta=meta, evaluation=split.evaluation, dev=dev)


def early_stopping_fraction(config: Any, include_verified: bool) -> float | None:
    """The share of the meta split to early-stop on instead, when the student trains on verified tasks
    (the gold term, or RETRAIN_INCLUDE_VERIFIED): early stopping on trained-on sentences selects nothing
    (docs/training.md). None: the meta split itself is the early-stopping set."""
    return config.dev_fraction if config.gold_weight > 0 or include_verified else None


def training_set(snapshot: ProjectSnapshot, labels: LLMLabels, split: VerifiedSplit,
                 include_meta: bool) -> list[Example]:
    """LLM labels of tasks no human has annotated, made on the task's current text."""
    texts = {int(t["id"]): snapshot.text_of(t) for t in snapshot.unlabeled}
    train = [Example(str(tid), text, spans) for tid, (text, spans) in sorted(labels.items())
             if texts.get(tid) == text]
    return train + (list(split.meta) if include_meta else [])


def train_config(settings: Settings) -> Any:
    """The retrain job's TrainConfig: the recipe with the job's epoch budget and device."""
    from training.trainer import TrainConfig

    return TrainConfig.from_recipe(settings.retrain_recipe, max_epochs=settings.retrain_max_epochs,
                                   patience=settings.retrain_patience, device=settings.student_device)


def train_student(train_set: list[Example], meta: list[Example], schema: LabelSchema, settings: Settings,
                  progress: Progress, dev: list[Example] | None = None, config: Any = None) -> Any:
    """The student on `train_set`, reweighted against `meta`, early-stopped on `dev` (None: the trainer's
    rule, the meta set or its held-out share); `config` is the job's `train_config(settings)`, built once."""
    from training.trainer import train

    config = config if config is not None else train_config(settings)

    def on_step(info: Mapping[str, Any]) -> None:
        epochs, steps = max(1, int(info.get("max_epochs") or 1)), max(1, int(info.get("total_steps") or 1))
        fraction = 0.1 + 0.65 * min(1.0, int(info.get("step") or 0) / steps)
        progress("training", fraction, epoch=info.get("epoch"), max_epochs=epochs, step=info.get("step"),
                 total_steps=steps)

    return train(train_set, meta, config, labels=schema.values, encoder=settings.student_encoder, progress=False,
                 progress_callback=on_step, dev_examples=dev)


def ask_llm_about(services: Services, snapshot: ProjectSnapshot, split: VerifiedSplit, labels: LLMLabels
                  ) -> LLMLabels:
    """LLM labels for evaluation tasks that have none (a human labelled them first), with demonstrations
    from outside the evaluation split only, so the LLM is compared on tasks it has not seen either. Cached and recorded:
    each task is asked once. Returns the labels with the new ones."""
    missing = [ex for ex in split.evaluation if int(ex.id) not in labels or labels[int(ex.id)][0] != ex.text]
    if not missing:
        return labels
    annotator = services.project_annotator(snapshot.project_id, snapshot.schema,
                                           services.demo_index(split.demonstrations))
    tasks = [{"id": int(ex.id), "data": {snapshot.schema.value_key: ex.text}} for ex in missing]
    annotator.annotate_tasks(tasks, concurrency=services.settings.llm_concurrency)
    return services.llm_labels(snapshot.project_id).all()


def compare_on_held_out(model: Any, evaluation: Sequence[Example], labels: LLMLabels, min_tasks: int
                        ) -> dict[str, Any]:
    """Student vs LLM on held-out verified tasks that have an LLM label on the same text."""
    from training.metrics import entity_scores

    tasks = [ex for ex in evaluation if int(ex.id) in labels and labels[int(ex.id)][0] == ex.text]
    if len(tasks) < min_tasks:
        return {"comparable": False, "n": len(tasks),
                "reason": f"not enough verified tasks to compare (n={len(tasks)} < {min_tasks})"}
    gold, texts = [ex.spans for ex in tasks], [ex.text for ex in tasks]
    llm_spans = [labels[int(ex.id)][1] for ex in tasks]
    # Gold made by correcting the LLM's own pre-labels favours the LLM; this share says how much.
    unchanged = sum(set(g) == set(p) for g, p in zip(gold, llm_spans, strict=True)) / len(tasks)
    return {"comparable": True, "n": len(tasks), "llm_unchanged_share": round(unchanged, 4),
            "student": _prf(entity_scores(gold, model.predict(texts), texts)),
            "llm": _prf(entity_scores(gold, llm_spans, texts))}


def publish_student(services: Services, project_id: int, result: Any, comparison: dict[str, Any],
                    info: dict[str, Any]) -> StudentHandle:
    """Save atomically, then point the project at it; a crash before the state update keeps the old one."""
    metrics = {**result.metrics, "comparison": comparison}
    version = model_store(services.data_dir, project_id).save(result.model, metrics, result.sentence_weights,
                                                              {"project": project_id, **info})
    comparable = comparison.get("comparable", False)
    services.state(project_id).update(
        student_version=version, comparison=comparison, published_at=time.time(),
        student_f1=comparison["student"]["f1"] if comparable else None,
        llm_f1=comparison["llm"]["f1"] if comparable else None)
    return StudentHandle(version, result.model, metrics, result.sentence_weights)


def _prf(scores: Mapping[str, Any]) -> dict[str, float]:
    return {k: round(float(scores[k]), 4) for k in ("precision", "recall", "f1")}


def mark_suspects(ls: Any, snapshot: ProjectSnapshot, weights: Mapping[str, float]) -> int:
    """`llm_label_weight` (a number: 1.0 = a typical training sentence, 0 = ignored) on LLM-labelled tasks.

    Reviewers sort the Data Manager by it, ascending: the LLM labels the meta-learner trusted least first.
    Only changed values are written.
    """
    relative = relative_weights(weights)
    updates = {}
    for task in snapshot.unlabeled:
        value = relative.get(str(task["id"]))
        data = task.get("data") or {}
        if value is not None and data.get("llm_label_weight") != round(value, 4):
            updates[int(task["id"])] = {**data, "llm_label_weight": round(value, 4)}
    return update_task_data(ls, snapshot.unlabeled, updates)


def flag_for_review(ls: Any, snapshot: ProjectSnapshot) -> int:
    """Mark flagged tasks (`llm_review` in their data) so reviewers find them; returns how many are flagged."""
    updates = {}
    for task in snapshot.tasks:
        reason = snapshot.flagged.get(int(task["id"]))
        data = task.get("data") or {}
        if reason and data.get("llm_review") != reason:
            updates[int(task["id"])] = {**data, "llm_review": reason}
    try:
        update_task_data(ls, snapshot.tasks, updates)
    except Exception as exc:  # noqa: BLE001 - the flag is advisory; the meta set already excludes them
        log.warning("project %s: could not mark %d flagged tasks: %s", snapshot.project_id, len(updates), exc)
    return len(snapshot.flagged)


def next_round(ls: Any, project_id: int, services: Services, snapshot: ProjectSnapshot,
               student: StudentHandle) -> dict[str, Any]:
    from backend.acquire import acquire_round

    s = services.settings
    try:
        return acquire_round(ls, project_id, s, s.acquisition_strategy, s.acquisition_batch, progress=False,
                             services=services, snapshot=snapshot, student=student,
                             budget_words=s.acquisition_budget_words).to_dict()
    except Exception as exc:  # noqa: BLE001 - the new model is published either way
        log.warning("project %s: acquisition round failed after retrain: %s", project_id, exc)
        return {"error": str(exc)[:300]}
