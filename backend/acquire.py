"""One acquisition round inside Label Studio: score the pool, select, LLM-annotate, publish the queue.

Stages (each a function; `acquire_round` only chains them):
1. `read_project` (backend.project_snapshot): the tasks, once; skipped when the retrain job passes its own.
2. `score_pool_data`: the student's marginals and embeddings for the unlabeled tasks (cached per version);
   before any student exists, MiniLM sentence embeddings only (diversity and random strategies).
3. `select_tasks`: the strategy's choice, optionally mixed with suspect LLM labels.
4. `ProjectAnnotator.annotate_tasks`: LLM spans for the selected tasks, demonstrations from the meta split.
5. `publish_queue` (backend.queue_publisher): the round's version carries the selected tasks first and every
   other pre-labelled task after them, then the project switches to it (see docs/predictions.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from acquisition import PoolData, get_strategy, mix_suspects
from acquisition.base import EmptyPoolError, MissingPoolDataError, QueryStrategy
from acquisition.cost import WordCost, fill_budget, select_within_budget
from acquisition.scoring import score_pool
from backend.composition import Services
from backend.labelstudio import LabelStudioError
from backend.project_snapshot import ProjectSnapshot, read_project, split_verified
from backend.queue_publisher import (
    QueueItem,
    current_label,
    publish_queue,
    round_version,
    unannotated_with_labels,
)
from backend.retrier import mark_status
from backend.settings import Settings
from backend.student import StudentHandle, load_latest_student
from backend.suspects import suspect_scores
from training.spans import Span

log = logging.getLogger(__name__)


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
    carried_over: int = 0
    order: list[int] = field(default_factory=list)  # task ids, label-first first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _EmbeddingOnly:
    """Before any student exists: MiniLM sentence embeddings, no marginals (diversity/random only)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def pool_outputs(self, texts: list[str]) -> Any:
        return _PoolOutputs(self.embedder.embed(texts), [np.zeros((0, 1), np.float32) for _ in texts])


@dataclass
class _PoolOutputs:
    embeddings: np.ndarray
    marginals: list[np.ndarray]


def needs_marginals(strategy: QueryStrategy) -> bool:
    """Whether the strategy reads the student's outputs (marginals, or BALD's MC passes), so cannot run
    before a first retrain."""
    return bool(strategy.needs_student)


# MC-dropout passes on the student's head for strategies that read them (BALD): one encoder pass per task.
MC_PASSES = 10


def score_pool_data(services: Services, snapshot: ProjectSnapshot, student: StudentHandle | None,
                    *, mc_passes: int = 0) -> tuple[PoolData, int]:
    """PoolData for the snapshot's unlabeled tasks (in order), and how many tasks were scored now.

    `mc_passes` > 0 adds `mc_marginals` from the student (training.mc_dropout; not cached)."""
    scorer: Any = student.model if student else _EmbeddingOnly(services.embedder())
    version_tag = student.version if student else "minilm-embeddings"
    cache_dir = services.paths(snapshot.project_id).pool_scores
    pool, verified = snapshot.unlabeled, snapshot.verified
    ids = [str(t["id"]) for t in pool]
    marginals, embeddings, scored_now = score_pool(scorer, ids, [snapshot.text_of(t) or "" for t in pool],
                                                   version_tag, cache_dir)
    _, labeled_emb, _ = score_pool(scorer, [ex.id for ex in verified], [ex.text for ex in verified], version_tag,
                                   cache_dir)
    suspect = suspect_scores(ids, student.sentence_weights) if student and student.sentence_weights else None
    mc = None
    if mc_passes and student is not None:
        from training.mc_dropout import mc_head_marginals

        mc = mc_head_marginals(student.model, [snapshot.text_of(t) or "" for t in pool], passes=mc_passes)
    data = PoolData(ids=ids, marginals=marginals if student else None, embeddings=embeddings,
                    labeled_embeddings=labeled_emb if verified else None, suspect_scores=suspect, mc_marginals=mc)
    return data, scored_now


def select_tasks(pool: PoolData, strategy: QueryStrategy, batch: int, suspect_fraction: float, seed: int,
                 *, budget_words: int | None = None, texts: list[str] | None = None) -> list[int]:
    """Indices into the pool, label-first first: `batch` tasks, or as many as fit in `budget_words` words
    of `texts` (the pool's texts, in order; acquisition.cost, suspects included in the budget)."""
    rng = np.random.default_rng(seed)
    if budget_words is not None:
        if texts is None or len(texts) != pool.n:
            raise ValueError("a word budget needs the pool's texts, one per pool item")
        costs = WordCost().costs(texts)
        order = select_within_budget(strategy, pool, budget_words, costs, rng)
        if pool.suspect_scores is not None and suspect_fraction > 0 and order.size:
            order = fill_budget(mix_suspects(order, pool.suspect_scores, suspect_fraction), costs, budget_words)
        return [int(i) for i in order]
    k = min(batch, pool.n)
    order = strategy.select(pool, k, rng=rng)
    if pool.suspect_scores is not None and suspect_fraction > 0:
        order = mix_suspects(order, pool.suspect_scores, suspect_fraction)[:k]
    return [int(i) for i in order]


def acquisition_candidates(snapshot: ProjectSnapshot, labels: Mapping[int, tuple[str, list[Span]]],
                           suspect_fraction: float) -> ProjectSnapshot:
    """The snapshot with only the unlabeled tasks a round may pick: those the LLM has not labelled yet (on
    their current text). Re-picking a labelled task buys nothing: its reply is cached, it already carries its
    pre-label and is in the training set. Measured: with it, the pre-labelled share of served tasks fell to
    76 % by round 4 of benchmarks/annotator_effort.py as the student's uncertain picks were old tasks.
    Suspect mixing (`suspect_fraction` > 0) re-asks labelled tasks on purpose, so it keeps them all; and when
    every task is labelled, all stay candidates."""
    if suspect_fraction > 0:
        return snapshot
    fresh = [t for t in snapshot.unlabeled if current_label(labels, t, snapshot.schema.value_key) is None]
    return replace(snapshot, unlabeled=fresh) if fresh else snapshot


def acquire_round(ls: Any, project_id: int, settings: Settings, strategy: str | None = None, batch: int = 50,
                  suspect_fraction: float = 0.0, progress: bool = True, seed: int = 0,
                  strategy_options: dict[str, Any] | None = None, *, services: Services | None = None,
                  snapshot: ProjectSnapshot | None = None, student: StudentHandle | None = None,
                  budget_words: int | None = None) -> AcquisitionReport:
    """One round. The retrain job passes its post-training snapshot and the student in memory (no second read).

    `strategy`: default `settings.acquisition_strategy` (ACQUISITION_STRATEGY).
    `budget_words`: select as many tasks as fit in that many words to review (instead of `batch` tasks)."""
    strategy = strategy or settings.acquisition_strategy
    # Before any Label Studio read: a bad name or option fails fast and touches nothing.
    chooser = get_strategy(strategy, **(strategy_options or {}))
    if budget_words is not None and (isinstance(budget_words, bool) or not isinstance(budget_words, int)
                                     or budget_words <= 0):
        raise ValueError(f"budget_words must be a positive number of words, got {budget_words!r}")
    services = services or Services(settings)
    labels = services.llm_labels(project_id)
    snapshot = snapshot or read_project(ls, project_id, services.schema, labels.all())
    if not snapshot.unlabeled:
        raise EmptyPoolError(f"project {project_id} has no unlabeled task left to acquire")
    student = student or load_latest_student(services.data_dir, project_id)
    if student is None and needs_marginals(chooser):
        raise MissingPoolDataError(
            f"strategy {strategy!r} needs a trained student model and project {project_id} has none yet; "
            "retrain first (Start training in Label Studio, or the webhook job), or use random/kmeans/coreset")
    candidates = acquisition_candidates(snapshot, labels.all(), suspect_fraction)
    pool, scored_now = score_pool_data(services, candidates, student,
                                       mc_passes=MC_PASSES if chooser.needs_mc_marginals else 0)
    texts = [candidates.text_of(t) or "" for t in candidates.unlabeled]
    picks = select_tasks(pool, chooser, batch, suspect_fraction, seed, budget_words=budget_words, texts=texts)
    if not picks:
        raise EmptyPoolError(f"no unlabeled task of project {project_id} fits in {budget_words} words")
    selected = [candidates.unlabeled[i] for i in picks]

    demos = services.demo_index(split_verified(snapshot.verified, settings.retrain_holdout_fraction).meta)
    annotator = services.project_annotator(project_id, snapshot.schema, demos)
    outcomes = annotator.annotate_tasks(selected, concurrency=settings.llm_concurrency, progress=progress)
    head = [QueueItem(int(t["id"]), snapshot.text_of(t) or "", o.spans)
            for t, o in zip(selected, outcomes, strict=True) if o.ok]
    try:
        mark_status(ls, labels, selected, outcomes, settings.llm_retry_max_attempts)
    except Exception as exc:  # noqa: BLE001 - the status column is advisory; the queue is what matters
        log.warning("project %s: could not write llm_status: %s", project_id, exc)
    if not head:
        raise LabelStudioError(f"the LLM annotated none of the {len(selected)} selected tasks; queue unchanged")
    rest = unannotated_with_labels(snapshot.unlabeled, labels.all(), snapshot.schema.value_key,
                                   snapshot.annotated_ids)
    state = services.state(project_id)
    round_no = int(state.get("acq_round", 0)) + 1
    published = publish_queue(ls, project_id, snapshot.schema, round_version(round_no), head, rest)
    state.update(model_version=published.version, acq_round=round_no, strategy=strategy,
                 student_version=student.version if student else state.get("student_version"))
    report = AcquisitionReport(project_id, round_no, published.version, strategy, len(snapshot.unlabeled),
                               len(selected), published.uploaded, len(selected) - len(head), scored_now,
                               published.stale_deleted, student.version if student else None,
                               published.carried_over, [item.task_id for item in head])
    log.info("acquisition round %d: %d tasks at the head of %s, %d carried over (%d not annotated)", round_no,
             len(head), published.version, published.carried_over, report.not_annotated)
    return report

