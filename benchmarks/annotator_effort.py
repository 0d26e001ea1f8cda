"""Annotator effort over rounds (issue 11): a scripted annotator works through Label Studio's own queue.

Real Label Studio 1.23.2, Redis, the backend and an RQ worker, the simulated LLM on BC5CDR. The annotator
(gold labels play the human) asks `GET /api/projects/<id>/next` for the next task in queue order, as Label
All Tasks does, compares what it was shown (the predictions Label Studio serves, i.e. those at the
project's model version) with the gold spans, and submits gold. Each round is `--per-round` submissions;
the webhook then queues a retrain, and the annotator waits for it (retrain + acquisition round) before the
next round, so each round meets the queue of the previous retrain.

Per round: the share of served tasks that showed pre-labels, spans added / deleted / changed per task
against what was shown, the student's and the LLM's F1 on a fixed BC5CDR test sample, the serving
source, and the LLM calls and cost (the simulation priced as gpt-4o-mini).

Goals (issue 11): pre-labels on >= 99 % of served tasks in every round; edits per task fall from the first
round to the last; no round shows fewer pre-labelled tasks than the one before. `--check-goals` makes the
exit status say whether they hold.

    python -m benchmarks.annotator_effort            # starts its own Label Studio (first start ~40 s+)
    python -m benchmarks.annotator_effort --ls-url http://127.0.0.1:8080 --ls-token <40-char token>
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import DATA, REPO, write_result
from llmaaa.services import (
    LabelStudioConfig,
    Service,
    free_port,
    start_backend,
    start_fake_llm,
    start_label_studio,
    start_redis,
    start_worker,
)
from training.data import Example, load_split
from training.spans import Span

PRICE = {"simulated-llm": [0.00015, 0.0006]}  # priced as gpt-4o-mini, USD per 1K tokens


@dataclass
class RoundFigures:
    round: int
    served: int
    prelabelled: int
    prelabelled_share: float
    added_per_task: float
    deleted_per_task: float
    changed_per_task: float
    edits_per_task: float
    model_version: str | None
    queue: str
    student_version: str | None
    student_f1_test: float | None
    llm_f1_test: float | None
    held_out_student_f1: float | None
    held_out_llm_f1: float | None
    serving_source: str
    llm_calls: int
    llm_cached_calls: int
    llm_cost_usd: float
    retrain_seconds: float | None


def edits(shown: list[Span], gold: list[Span]) -> tuple[int, int, int]:
    """(added, deleted, changed): a shown span that overlaps a gold span with other bounds or label is one
    change; shown spans left over were deleted, gold spans left over were added."""
    shown_left = [s for s in shown if s not in gold]
    gold_left = [g for g in gold if g not in shown]
    changed = 0
    for s in list(shown_left):
        partner = next((g for g in gold_left if s.start < g.end and g.start < s.end), None)
        if partner is not None:
            shown_left.remove(s)
            gold_left.remove(partner)
            changed += 1
    return len(gold_left), len(shown_left), changed


def result_spans(result: list[dict[str, Any]]) -> list[Span]:
    return [Span(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result or []
            if (r.get("value") or {}).get("labels")]


def gold_result(ex: Example) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end], "labels": [s.label]}}
            for s in ex.spans]


class Stack:
    """Label Studio (own or given), the simulated LLM, Redis, the backend and one RQ worker."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.services: list[Service] = []
        self.work = work
        if args.ls_url:
            port = int(args.ls_url.rsplit(":", 1)[1].split("/")[0])
            self.ls_cfg = LabelStudioConfig(data_dir=work / "unused", port=port, token=args.ls_token)
        else:
            self.ls_cfg = LabelStudioConfig(data_dir=work / "label-studio", port=free_port())
            self.services.append(start_label_studio(self.ls_cfg, timeout=args.ls_timeout))
        llm = start_fake_llm(args.data, work, "--noise", str(args.noise), "--seed", str(args.seed), timeout=120)
        self.services.append(llm)
        self.llm_url = llm.url
        redis = start_redis(work / "redis")
        self.services.append(redis)
        redis_url = redis.url
        self.env = {
            "OPENAI_BASE_URL": self.llm_url, "OPENAI_API_KEY": "simulated", "LLM_MODEL": "simulated-llm",
            "LLM_PRICES": json.dumps(PRICE), "LLMAAA_DATA_DIR": str(work / "backend"),
            "LABEL_STUDIO_URL": self.ls_cfg.url, "LABEL_STUDIO_API_KEY": self.ls_cfg.token, "REDIS_URL": redis_url,
            "MIN_NEW_ANNOTATIONS": str(args.per_round), "RETRAIN_MAX_EPOCHS": str(args.epochs), "RETRAIN_PATIENCE": "3",
            "ACQUISITION_BATCH": str(args.batch), "LLMAAA_TORCH_THREADS": os.environ.get("LLMAAA_TORCH_THREADS", "1"),
        }
        backend = start_backend(self.env, work, timeout=300)
        self.services.append(backend)
        self.backend_url = backend.url
        self.services.append(start_worker(self.env, work))

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()


def ledger_totals(data_dir: Path) -> tuple[int, int, float]:
    calls = cached = 0
    usd = 0.0
    path = data_dir / "costs.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("cached"):
                cached += 1
            else:
                calls += 1
                usd += float(row.get("usd") or 0.0)
    return calls, cached, usd


def run(args: argparse.Namespace) -> dict[str, Any]:
    from backend.labelstudio import connect
    from backend.settings import Settings
    from backend.setup_project import preannotate, setup_project
    from backend.state import ProjectState
    from backend.student import load_latest_student
    from llmaaa.demo import _verify_some_with_gold
    from training.metrics import entity_scores

    work = Path(tempfile.mkdtemp(prefix="annotator-effort-"))
    stack = Stack(args, work)
    try:
        settings = Settings(**{k.lower(): v for k, v in stack.env.items()})
        ls = connect(stack.ls_cfg.url, stack.ls_cfg.token)
        train_file = args.data / "train.jsonl"
        report = setup_project(ls, settings, f"effort benchmark {time.time_ns()}", args.labels, train_file,
                               args.tasks, stack.backend_url)
        pid = report.project_id
        # As `make demo`: a few gold-verified tasks (the k-NN demo pool), then a first batch of pre-labels.
        _verify_some_with_gold(ls, pid, train_file, args.verified)
        stored, failed, version = preannotate(ls, pid, settings, args.preannotate, progress=False)
        print(f"project {pid}: {args.tasks} tasks, {args.verified} verified, {stored} pre-annotated as "
              f"{version!r} ({failed} not annotated)", flush=True)
        gold = {ex.id: ex for ex in load_split(train_file)}
        test = load_split(args.data / "test.jsonl", limit=args.test_sample)
        test_texts = [ex.text for ex in test]
        llm_eval = _llm_on_test(stack, settings, test_texts, work)
        llm_test_f1 = entity_scores([ex.spans for ex in test], llm_eval, test_texts)["f1"]
        http = httpx.Client(base_url=stack.ls_cfg.url, headers={"Authorization": f"Token {stack.ls_cfg.token}"},
                            timeout=120)
        state = ProjectState(Path(stack.env["LLMAAA_DATA_DIR"]), pid)
        rounds: list[RoundFigures] = []
        calls_before = ledger_totals(Path(stack.env["LLMAAA_DATA_DIR"]))
        for rnd in range(1, args.rounds + 1):
            project = ls.projects.get(id=pid)
            served = prelabelled = added = deleted = changed = 0
            queues: set[str] = set()
            for _ in range(args.per_round):
                resp = http.get(f"/api/projects/{pid}/next")
                if resp.status_code == 404:
                    break
                task = resp.json()
                queues.add(str(task.get("queue")))
                preds = task.get("predictions") or []
                shown = result_spans(preds[0]["result"]) if preds else []
                ex = gold[str(task["data"]["ref_id"])]
                a, d, c = edits(shown, list(ex.spans))
                served += 1
                prelabelled += bool(preds)
                added, deleted, changed = added + a, deleted + d, changed + c
                ls.annotations.create(id=task["id"], result=gold_result(ex))
            started = time.monotonic()
            retrain = _wait_retrain(state, rnd, args.retrain_timeout)
            student = load_latest_student(Path(stack.env["LLMAAA_DATA_DIR"]), pid)
            student_f1 = (entity_scores([ex.spans for ex in test], student.model.predict(test_texts), test_texts)["f1"]
                          if student else None)
            current = state.read()
            calls_now = ledger_totals(Path(stack.env["LLMAAA_DATA_DIR"]))
            s_f1, l_f1 = current.get("student_f1"), current.get("llm_f1")
            source = "student" if (s_f1 is not None and l_f1 is not None and s_f1 > l_f1) else "llm"
            n = max(1, served)
            fig = RoundFigures(
                round=rnd, served=served, prelabelled=prelabelled, prelabelled_share=round(prelabelled / n, 4),
                added_per_task=round(added / n, 3), deleted_per_task=round(deleted / n, 3),
                changed_per_task=round(changed / n, 3), edits_per_task=round((added + deleted + changed) / n, 3),
                model_version=project.model_version, queue=",".join(sorted(queues)),
                student_version=current.get("student_version"),
                student_f1_test=round(student_f1, 4) if student_f1 is not None else None,
                llm_f1_test=round(llm_test_f1, 4), held_out_student_f1=s_f1, held_out_llm_f1=l_f1,
                serving_source=source, llm_calls=calls_now[0] - calls_before[0],
                llm_cached_calls=calls_now[1] - calls_before[1],
                llm_cost_usd=round(calls_now[2] - calls_before[2], 6),
                retrain_seconds=(retrain or {}).get("seconds") or round(time.monotonic() - started, 1))
            calls_before = calls_now
            rounds.append(fig)
            print(json.dumps(asdict(fig)), flush=True)
        goals = check_goals(rounds)
        return {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "rounds": [asdict(r) for r in rounds], "goals": goals, "work_dir": str(work)}
    finally:
        stack.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)  # ~350 MB of student versions and logs


def _llm_on_test(stack: Stack, settings: Any, texts: list[str], work: Path) -> list[list[Span]]:
    """The LLM's spans on the test sample, through the backend's own annotator but with a separate data dir,
    so the evaluation calls do not count as the loop's LLM calls."""
    from backend.composition import Services
    from backend.labeling_config import build_label_config, load_labels_file

    services = Services(settings.model_copy(update={"llmaaa_data_dir": work / "llm-eval", "knn_k": 0}))
    schema = services.schema(build_label_config(load_labels_file(REPO / "examples" / "bc5cdr" / "labels.json")))
    annotator = services.annotator(schema)
    outcomes = annotator.annotate_many(texts, concurrency=8, progress=False)
    return [list(o.spans) if o.ok else [] for o in outcomes]


def _wait_retrain(state: Any, rnd: int, timeout: float) -> dict[str, Any] | None:
    """Until the retrain these submissions queued has published and its acquisition round is in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = state.read()
        job = current.get("job") or {}
        last = current.get("last_retrain") or {}
        if job.get("stage") == "failed":
            raise RuntimeError(f"round {rnd}: the retrain failed: {job.get('error')}")
        if job.get("stage") == "finished" and int(current.get("acq_round", 0)) >= rnd and last:
            return last
        time.sleep(2)
    print(f"round {rnd}: no retrain finished within {timeout:.0f}s; going on", flush=True)
    return None


def check_goals(rounds: list[RoundFigures]) -> dict[str, Any]:
    shares = [r.prelabelled_share for r in rounds]
    edits_ = [r.edits_per_task for r in rounds]
    return {
        "prelabels_ge_99pct_every_round": all(s >= 0.99 for s in shares),
        "edits_fall_first_to_last": len(edits_) >= 2 and edits_[-1] < edits_[0],
        "prelabelled_never_falls": all(b >= a for a, b in zip(shares, shares[1:], strict=False)),
    }


def table(result: dict[str, Any]) -> str:
    head = ("| round | served | pre-labelled | added/task | deleted/task | changed/task | edits/task | student F1 "
            "(test) | LLM F1 (test) | serving | LLM calls | cost USD |")
    lines = [head, "|" + "---|" * 12]
    for r in result["rounds"]:
        lines.append(f"| {r['round']} | {r['served']} | {r['prelabelled_share']:.0%} | {r['added_per_task']:.2f} | "
                     f"{r['deleted_per_task']:.2f} | {r['changed_per_task']:.2f} | {r['edits_per_task']:.2f} | "
                     f"{r['student_f1_test'] if r['student_f1_test'] is not None else '-'} | {r['llm_f1_test']} | "
                     f"{r['serving_source']} | {r['llm_calls']} | {r['llm_cost_usd']:.4f} |")
    lines.append("")
    lines.append("goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["goals"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    p.add_argument("--labels", type=Path, default=REPO / "examples" / "bc5cdr" / "labels.json")
    p.add_argument("--tasks", type=int, default=300, help="BC5CDR train sentences in the project (as make demo)")
    p.add_argument("--verified", type=int, default=120, help="gold-verified tasks before round 1 (as make demo)")
    p.add_argument("--preannotate", type=int, default=50, help="first batch of LLM pre-labels (as make demo)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per-round", type=int, default=25, help="submissions per round (= MIN_NEW_ANNOTATIONS)")
    p.add_argument("--batch", type=int, default=20, help="ACQUISITION_BATCH: tasks queued per round (make demo: 20)")
    p.add_argument("--epochs", type=int, default=20, help="RETRAIN_MAX_EPOCHS (early stopping, as make demo)")
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-sample", type=int, default=100, help="BC5CDR test sentences for the F1 columns")
    p.add_argument("--retrain-timeout", type=float, default=1800)
    p.add_argument("--ls-url", help="reuse a running Label Studio instead of starting one")
    p.add_argument("--ls-token", default=LabelStudioConfig(data_dir=Path(".")).token)
    p.add_argument("--ls-timeout", type=float, default=900, help="Label Studio start-up timeout (migrations)")
    p.add_argument("--keep-work", action="store_true", help="keep the work dir (logs, models, state)")
    p.add_argument("--check-goals", action="store_true", help="exit 1 when a goal of issue 11 does not hold")
    p.add_argument("--out", default="annotator_effort")
    args = p.parse_args(argv)
    started = time.monotonic()
    result = run(args)
    result["seconds"] = round(time.monotonic() - started, 1)
    path = write_result(args.out, result)
    print(table(result))
    print(f"\n{result['seconds']} s; results in {path}")
    return 1 if args.check_goals and not all(result["goals"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
