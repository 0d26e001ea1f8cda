"""The closed loop's latencies, on a real Label Studio, Redis, backend and RQ worker (simulated LLM).

    .venv/bin/python -m benchmarks.loop_latency [--tasks 200] [--llm-labeled 100] [--burst 1000]

1. Webhook latency (p50/p99) under a burst of annotation events for one project, as Label Studio would
   send them (the backend's /webhook only counts and, at most once, enqueues).
2. End-to-end time from the annotation that crosses MIN_NEW_ANNOTATIONS to the new version served by
   /setup, broken down by stage: queue wait, each retrain stage, and publication to /setup.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import redis

from backend.jobs import QUEUE_NAME, new_key, queued_key
from backend.labelstudio import connect, iter_tasks
from backend.settings import Settings
from backend.setup_project import preannotate, setup_project
from backend.state import ProjectState
from benchmarks._common import DATA, REPO, percentile, write_result
from llmaaa.services import (
    LabelStudioConfig,
    free_port,
    start_backend,
    start_fake_llm,
    start_label_studio,
    start_redis,
    start_worker,
)
from training.data import load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--llm-labeled", type=int, default=100)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--min-new", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=4)
    args = ap.parse_args()
    services = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        try:
            redis = start_redis(tmp / "redis")
            services.append(redis)
            redis_url = redis.url
            ls_cfg = LabelStudioConfig(data_dir=tmp / "ls", port=free_port())
            services.append(start_label_studio(ls_cfg))
            llm = start_fake_llm(args.data, tmp, "--noise", "0.3", "--fail-rate", "0")
            services.append(llm)
            env = {"OPENAI_BASE_URL": llm.url, "OPENAI_API_KEY": "bench",
                   "LLM_MODEL": "simulated-llm", "LLMAAA_DATA_DIR": str(tmp / "state"),
                   "LABEL_STUDIO_URL": ls_cfg.url, "LABEL_STUDIO_API_KEY": ls_cfg.token, "REDIS_URL": redis_url,
                   "MIN_NEW_ANNOTATIONS": str(args.min_new), "RETRAIN_MAX_EPOCHS": str(args.max_epochs),
                   "ACQUISITION_BATCH": "50"}
            backend = start_backend(env, tmp)
            services.append(backend)
            backend_url = backend.url
            burst = webhook_burst(backend_url, args.burst, redis_url)
            e2e = end_to_end(args, ls_cfg, env, backend_url, services, tmp)
        finally:
            for svc in reversed(services):
                svc.stop()
    print(f"## Webhook latency, burst of {args.burst} annotation events (one project)\n")
    print("| p50 ms | p99 ms | max ms | jobs queued |\n|---|---|---|---|")
    print(f"| {burst['p50_ms']} | {burst['p99_ms']} | {burst['max_ms']} | {burst['jobs_queued']} |\n")
    print("## From the threshold annotation to the new version in /setup\n")
    print("| stage | seconds |\n|---|---|")
    for stage, seconds in e2e["stages"].items():
        print(f"| {stage} | {seconds} |")
    print(f"| **total** | **{e2e['total_s']}** |")
    write_result("loop_latency", {"burst": burst, "end_to_end": e2e, "args": vars(args) | {"data": str(args.data)}})


def webhook_burst(backend_url: str, n: int, redis_url: str) -> dict[str, float]:
    pid = 777_000  # not a Label Studio project: the queued job is removed below, before any worker runs
    event = {"action": "ANNOTATION_CREATED", "project": {"id": pid}, "task": {"id": 1, "data": {"text": "x"}},
             "annotation": {"id": 1, "result": []}}
    latencies, jobs = [], set()
    with httpx.Client(base_url=backend_url, timeout=10) as client:
        for _ in range(n):
            t = time.perf_counter()
            body = client.post("/webhook", json=event).json()
            latencies.append(time.perf_counter() - t)
            if body["retrain"]["queued"]:
                jobs.add(body["retrain"]["job_id"])
    conn = redis.Redis.from_url(redis_url)
    from rq import Queue

    Queue(QUEUE_NAME, connection=conn).empty()
    conn.delete(new_key(pid), queued_key(pid))
    return {"p50_ms": round(percentile(latencies, 50) * 1000, 2), "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2), "jobs_queued": len(jobs), "events": n}


def end_to_end(args: argparse.Namespace, ls_cfg: LabelStudioConfig, env: dict[str, str], backend_url: str,
               services: list, tmp: Path) -> dict[str, object]:
    ls = connect(ls_cfg.url, ls_cfg.token)
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    report = setup_project(ls, settings, "bench: loop", REPO / "examples" / "bc5cdr" / "labels.json",
                           args.data / "train.jsonl", args.tasks, backend_url)
    pid = report.project_id
    preannotate(ls, pid, settings, args.llm_labeled, progress=False)
    services.append(start_worker(env, tmp))
    gold = {ex.id: ex for ex in load_split(args.data / "train.jsonl", limit=args.tasks + 10)}
    tasks = [t for t in iter_tasks(ls, pid) if not t.get("annotations")]
    schema = ls.projects.get(id=pid).label_config
    version_before = httpx.post(f"{backend_url}/setup", json={"project": f"{pid}.0", "schema": schema}).json()

    def annotate(task: dict) -> None:
        ex = gold[task["data"]["ref_id"]]
        ls.annotations.create(id=task["id"], result=[
            {"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end], "labels": [s.label]}}
            for s in ex.spans])

    for task in tasks[: args.min_new - 1]:
        annotate(task)
    t0 = time.perf_counter()
    annotate(tasks[args.min_new - 1])  # crosses the threshold: the webhook queues the retrain
    t_saved = time.perf_counter()
    state = ProjectState(Path(env["LLMAAA_DATA_DIR"]), pid)
    while True:
        version = httpx.post(f"{backend_url}/setup", json={"project": f"{pid}.0", "schema": schema}).json()
        if version != version_before and (state.get("last_retrain") or {}).get("status"):
            break
        if time.perf_counter() - t0 > 1800:
            raise TimeoutError("no new version within 30 minutes")
        time.sleep(0.2)
    t_end = time.perf_counter()
    last = state.get("last_retrain")
    job_meta = _job_times(env["REDIS_URL"])
    stages = {"annotation save incl. webhook (Label Studio)": round(t_saved - t0, 2)}
    if job_meta:
        stages["queue wait (enqueued → worker started)"] = job_meta["queue_wait_s"]
    stages.update({f"retrain: {k}": round(v, 2) for k, v in (last.get("stage_seconds") or [])})
    accounted = sum(stages.values())
    stages["publication → /setup, job bookkeeping (rest)"] = round((t_end - t0) - accounted, 2)
    return {"total_s": round(t_end - t0, 2), "stages": stages, "train_tasks": last.get("train_tasks"),
            "version": version, "retrain": json.loads(json.dumps(last, default=str))}


def _job_times(redis_url: str) -> dict[str, float] | None:
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    conn = redis.Redis.from_url(redis_url)
    ids = FinishedJobRegistry(queue=Queue(QUEUE_NAME, connection=conn)).get_job_ids()
    if not ids:
        return None
    from rq.job import Job

    job = Job.fetch(ids[-1], connection=conn)
    if job.enqueued_at and job.started_at:
        return {"queue_wait_s": round((job.started_at - job.enqueued_at).total_seconds(), 2)}
    return None


if __name__ == "__main__":
    main()
