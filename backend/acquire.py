"""One acquisition round inside Label Studio: score the pool, select, LLM-annotate, reorder the queue.

The queue is reordered the way measured in `../shared/docs/label-studio-integration.md` §6: one prediction
per selected task with `model_version="acq-r<round>"`, holding the LLM's grounded spans (the annotator's
pre-annotation) and a unique rank-normalised `score` (lowest = label first). Predictions are validated,
bulk-imported with the created count checked, and only then is the project switched to
"Uncertainty sampling" at that version. Stale rounds are deleted. Label Studio itself respects task
locks: a re-rank reaches an annotator after the task currently locked to them
(`LABEL_STUDIO_TASK_LOCK_TTL`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from acquisition import PoolData, get_strategy, mix_suspects
from acquisition.base import EmptyPoolError, MissingPoolDataError
from acquisition.scoring import score_pool
from backend.labelstudio import (
    LabelStudioError,
    explain,
    import_predictions_checked,
    iter_tasks,
    submitted_annotation,
)
from backend.settings import Settings
from backend.state import ProjectState

log = logging.getLogger(__name__)

ACQ_PREFIX = "acq-r"
UNCERTAINTY_STRATEGIES = {"entropy", "least_confidence", "mnlp", "hybrid", "weighted_hybrid"}


@dataclass
class AcquisitionReport:
    project_id: int
    round: int
    model_version: str
    strategy: str
    pool_size: int
    selected: int
    uploaded: int
    not_annotated: int
    scored_now: int
    stale_deleted: int
    student_version: str | None
    order: list[int] = field(default_factory=list)  # task ids, label-first first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _EmbeddingOnly:
    """Before any student exists: MiniLM sentence embeddings, no marginals (diversity/random only)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def pool_outputs(self, texts: list[str]) -> Any:
        class _Out:
            pass

        out = _Out()
        out.embeddings = self.embedder.embed(texts)  # type: ignore[attr-defined]
        out.marginals = [np.zeros((0, 1), np.float32) for _ in texts]  # type: ignore[attr-defined]
        return out


def stale_prediction_ids(ls: Any, project_id: int, keep_version: str) -> list[int]:
    return [int(p.id) for p in ls.predictions.list(project=project_id)
            if (p.model_version or "").startswith(ACQ_PREFIX) and p.model_version != keep_version]


def acquire_round(ls: Any, project_id: int, settings: Settings, strategy: str = "hybrid", batch: int = 50,
                  suspect_fraction: float = 0.0, progress: bool = True, seed: int = 0,
                  strategy_options: dict[str, Any] | None = None) -> AcquisitionReport:
    from backend.model import NERBackendModel, Runtime
    from backend.student import load_latest_student

    state = ProjectState(settings.llmaaa_data_dir, project_id)
    try:
        project = ls.projects.get(id=project_id)
        tasks = list(iter_tasks(ls, project_id))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading project {project_id}") from exc
    runtime = Runtime(settings)
    model = NERBackendModel(project_id, project.label_config, runtime, settings.label_studio_url,
                            settings.label_studio_api_key.get_secret_value()
                            if settings.label_studio_api_key else None)
    key = model.schema.value_key
    pool = [t for t in tasks if submitted_annotation(t) is None and isinstance(t["data"].get(key), str)]
    verified = [t for t in tasks if submitted_annotation(t) is not None and isinstance(t["data"].get(key), str)]
    if not pool:
        raise EmptyPoolError(f"project {project_id} has no unlabeled task left to acquire")

    student = load_latest_student(settings.llmaaa_data_dir, project_id)
    if student is None and strategy in UNCERTAINTY_STRATEGIES:
        raise MissingPoolDataError(
            f"strategy {strategy!r} needs a trained student model and project {project_id} has none yet; "
            "retrain first (Start training in Label Studio, or the webhook job), or use random/kmeans/coreset")
    scorer: Any = student.model if student else _EmbeddingOnly(runtime.embedder())
    version_tag = student.version if student else "minilm-embeddings"
    cache_dir = settings.llmaaa_data_dir / "projects" / str(project_id) / "pool-scores"
    ids = [str(t["id"]) for t in pool]
    marginals, embeddings, scored_now = score_pool(scorer, ids, [t["data"][key] for t in pool], version_tag,
                                                   cache_dir)
    _, labeled_emb, _ = score_pool(scorer, [str(t["id"]) for t in verified],
                                   [t["data"][key] for t in verified], version_tag, cache_dir)
    suspect = None
    if student is not None and student.sentence_weights:
        suspect = suspect_scores(ids, student.sentence_weights)
    pool_data = PoolData(ids=ids, marginals=marginals if student else None, embeddings=embeddings,
                         labeled_embeddings=labeled_emb if len(verified) else None, suspect_scores=suspect)
    k = min(batch, len(pool))
    order = get_strategy(strategy, **(strategy_options or {})).select(pool_data, k,
                                                                       rng=np.random.default_rng(seed))
    if suspect is not None and suspect_fraction > 0:
        order = mix_suspects(order, suspect, suspect_fraction)[:k]
    selected = [pool[int(i)] for i in order]

    round_no = int(state.get("acq_round", 0)) + 1
    version = f"{ACQ_PREFIX}{round_no}"
    model.refresh_demos()
    outcomes = model.annotator.annotate_many([t["data"][key] for t in selected],
                                             concurrency=settings.llm_concurrency, progress=progress)
    ok = [(t, o) for t, o in zip(selected, outcomes, strict=True) if o.ok]
    for task, outcome in ok:
        model.record_llm_label(task, outcome)
    predictions = []
    for rank, (task, outcome) in enumerate(ok):
        pred = model.to_prediction(task, outcome)
        # Unique, never null, lowest first: Label Studio serves ascending score.
        pred.update(task=task["id"], model_version=version, score=round(rank / max(1, len(ok)), 6))
        predictions.append(pred)
    if not predictions:
        raise LabelStudioError(f"the LLM annotated none of the {len(selected)} selected tasks; queue unchanged")
    for pid in [int(p.id) for p in ls.predictions.list(project=project_id) if p.model_version == version]:
        ls.predictions.delete(id=pid)  # a crashed earlier attempt at this round: never duplicate
    texts = {t["id"]: t["data"][key] for t, _ in ok}
    uploaded = import_predictions_checked(ls, project_id, model.schema, predictions, texts)
    try:
        ls.projects.update(id=project_id, sampling="Uncertainty sampling", model_version=version)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, "switching the project to the new round") from exc
    state.update(model_version=version, acq_round=round_no, strategy=strategy,
                 student_version=student.version if student else None)
    stale = stale_prediction_ids(ls, project_id, version)
    for pid in stale:
        ls.predictions.delete(id=pid)
    report = AcquisitionReport(project_id, round_no, version, strategy, len(pool), len(selected), uploaded,
                               len(selected) - len(ok), scored_now, len(stale),
                               student.version if student else None, [int(t["id"]) for t, _ in ok])
    log.info("acquisition round %d: %d tasks queued as %s (%d not annotated)", round_no, uploaded, version,
             report.not_annotated)
    return report


def suspect_scores(ids: list[str], weights: dict[str, float]) -> np.ndarray:
    """Higher = more suspect: 1 − the sentence's learned weight relative to the median LLM-labeled one.

    Tasks the student never trained on (no weight) score 0.
    """
    known = np.array([weights[i] for i in ids if i in weights], dtype=np.float64)
    if known.size == 0:
        return np.zeros(len(ids))
    ref = float(np.median(known)) or float(known.max()) or 1.0
    return np.array([float(np.clip(1.0 - weights[i] / ref, 0.0, 1.0)) if i in weights else 0.0 for i in ids])
