"""`llmaaa demo` (`make demo`): the whole loop on embedded defaults, on this machine.

It starts Label Studio (SQLite), a local Redis (the one at REDIS_URL if it answers, else its own), an LLM
(`--llm simulated`, the default: the simulated LLM on BC5CDR; `--llm local`: the real Gemma 3 270M through
`llmaaa local-llm`, `make demo LLM=local`), the backend and an RQ worker; sets up a project of a few hundred
BC5CDR sentences;
stands in for a human on a few tasks (gold labels, so the k-NN demonstrations have verified examples to
draw from); pre-annotates the first batch; prints where to log in; and stops every child process on
Ctrl-C. Submitting annotations in the UI, or `llmaaa demo-annotate`, triggers a retrain: a new student
version, and a re-ordered queue.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from llmaaa.cli import positive_int
from llmaaa.services import (
    REPO_ROOT,
    LabelStudioConfig,
    Service,
    ensure_redis,
    http_ok,
    llmaaa_command,
    port_open,
    spawn,
    start_backend,
    start_label_studio,
    start_worker,
    wait_until,
)

log = logging.getLogger(__name__)

DEMO_TITLE = "llmaaa demo: BC5CDR chemicals and diseases"
DEFAULT_DATA = Path(os.environ.get("LLMAAA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "bc5cdr"

LLMKind = Literal["simulated", "local"]
LLM_KINDS: tuple[LLMKind, ...] = ("simulated", "local")
# The id `llmaaa local-llm` serves the packaged GGUF under (its file stem, passed explicitly so it cannot drift).
LOCAL_MODEL_ID = "gemma-3-270m-q4_k_m"
# The first pre-annotation batch: the simulation answers in milliseconds, the local model takes seconds a
# task on a CPU (about 10 s on a busy 2-core box, docs/local-llm.md), so its batch is small enough to wait for.
FIRST_BATCH: dict[LLMKind, int] = {"simulated": 50, "local": 10}


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run Label Studio + an LLM (simulated or local) + backend on BC5CDR, then wait")
    p.add_argument("--llm", choices=LLM_KINDS, default="simulated",
                   help="simulated: answers from gold labels with noise (instant); local: the real Gemma 3 270M "
                        "on llama.cpp (`make install-llm`; seconds per task)")
    p.add_argument("--llm-threads", type=positive_int, default=1,
                   help="--llm local: CPU threads of the one llama.cpp instance (1 is fastest on a busy box)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (../shared/data format)")
    p.add_argument("--labels", type=Path, default=REPO_ROOT / "examples" / "bc5cdr" / "labels.json")
    p.add_argument("--state", type=Path, default=REPO_ROOT / ".llmaaa" / "demo", help="all demo state")
    p.add_argument("--ls-port", type=int, default=8080)
    p.add_argument("--backend-port", type=int, default=9090)
    p.add_argument("--llm-port", type=int, default=9091)
    p.add_argument("--tasks", type=int, default=300, help="BC5CDR sentences to import")
    # 120: about 24 of them are held out (RETRAIN_HOLDOUT_FRACTION) for a fair LLM-vs-student comparison,
    # which needs COMPARE_MIN_TASKS (20); the rest are the meta set and the demonstrations (the paper: 100).
    p.add_argument("--verified", type=int, default=120,
                   help="tasks annotated with gold labels as a stand-in human (k-NN demo pool)")
    p.add_argument("--preannotate", type=int, default=None,
                   help=f"first batch of LLM pre-annotations (default {FIRST_BATCH['simulated']}, "
                        f"{FIRST_BATCH['local']} with --llm local)")
    p.add_argument("--max-epochs", type=int, default=20,
                   help="RETRAIN_MAX_EPOCHS: the student trains until early stopping, at most this long")
    p.add_argument("--noise", type=float, default=0.3, help="simulated LLM noise (see docs/simulated-llm.md)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--ls-timeout", type=float, default=600.0,
                   help="seconds to wait for Label Studio (its first start runs migrations: minutes on a busy box)")
    p.add_argument("--no-wait", action="store_true", help="set everything up, then stop (for smoke tests)")
    p.set_defaults(func=cmd_demo)

    a = sub.add_parser("demo-annotate", help="submit gold annotations on a few demo tasks, as a human would")
    a.add_argument("--n", type=int, default=5)
    a.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a.add_argument("--ls-url", default="http://127.0.0.1:8080")
    a.add_argument("--token", default=LabelStudioConfig(data_dir=Path(".")).token)
    a.add_argument("--project", type=int, help="default: the demo project")
    a.set_defaults(func=cmd_demo_annotate)


def first_batch_size(args: argparse.Namespace) -> int:
    """`--preannotate`, else the default of the LLM kind."""
    return int(args.preannotate) if args.preannotate is not None else FIRST_BATCH[args.llm]


@dataclass(frozen=True)
class LLMPlan:
    """How the demo runs its LLM: the process, where it answers, and what the backend and worker are told."""

    kind: LLMKind
    service_name: str
    command: list[str]
    base_url: str  # OpenAI-compatible, ending in /v1
    backend_env: dict[str, str]  # OPENAI_* and LLM_* settings for the backend, the worker and the first batch
    ready_timeout_s: float
    description: str  # what is annotating, for the start-up line and the summary


def plan_llm(args: argparse.Namespace) -> LLMPlan:
    """The LLM service of `args.llm` (no process is started here)."""
    base_url = f"http://127.0.0.1:{args.llm_port}/v1"
    if args.llm == "simulated":
        return LLMPlan(
            kind="simulated", service_name="fake-llm",
            command=llmaaa_command("fake-llm", "--data", str(args.data), "--port", str(args.llm_port),
                                   "--noise", str(args.noise)),
            base_url=base_url,
            backend_env={"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "simulated", "LLM_MODEL": "simulated-llm"},
            ready_timeout_s=180,
            description=f"the SIMULATED LLM (noise {args.noise})")
    threads = int(args.llm_threads)
    return LLMPlan(
        kind="local", service_name="local-llm",
        # One instance: on 2 shared cores a second one only competes for them (docs/local-llm.md).
        command=llmaaa_command("local-llm", "--port", str(args.llm_port), "--model-name", LOCAL_MODEL_ID,
                               "--concurrency", "1", "--threads", str(threads), "--max-queue", "16"),
        base_url=base_url,
        backend_env={
            "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "local", "LLM_MODEL": LOCAL_MODEL_ID,
            # A call takes seconds, tens of seconds on a busy box, plus its wait in the server's queue.
            "LLM_TIMEOUT_S": "180",
            # The server does not cancel a call its client gave up on: a retry would queue behind it.
            "LLM_MAX_RETRIES": "1",
            # One call in flight per lane: the server computes one at a time, more would only queue there.
            "LLM_CONCURRENCY": "1",
            "LLM_INTERACTIVE_CONCURRENCY": "1",
        },
        # Import, then the GGUF load: a few seconds warm, about 20 s cold on a busy box.
        ready_timeout_s=300,
        description=f"a REAL local LLM, Gemma 3 270M (GGUF Q4_K_M, llama.cpp, CPU, {threads} thread"
                    f"{'s' if threads > 1 else ''})")


def local_llm_missing() -> str | None:
    """Why the real local LLM cannot run here (the optional extra `llm` is not installed), or None.

    Only looks the packages up (no import, no model load): cheap enough for a pre-flight check.
    """
    from llmaaa.local_llm import INSTALL_HINT, MODEL_PACKAGE

    absent = [name for name in ("llama_cpp", MODEL_PACKAGE) if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return f"the optional extra `llm` is not installed ({', '.join(absent)} missing): {INSTALL_HINT}"


class DemoStopped(Exception):
    """Raised in the main thread by SIGINT or SIGTERM: unwinds set-up or the wait, then the cleanup runs."""


def install_stop_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM stop the demo, whatever the parent did with them.

    A job started with `&` from a non-interactive shell inherits SIGINT as ignored, and Python then
    installs no KeyboardInterrupt handler, so Ctrl-C / `kill -INT` would do nothing: set both explicitly.
    Returns the previous handlers.
    """
    stopping = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return  # a second signal must not cut the cleanup short and orphan children
        stopping.set()
        raise DemoStopped(signal.Signals(signum).name)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def cmd_demo(args: argparse.Namespace) -> int:
    services: list[Service] = []
    stop = threading.Event()
    install_stop_handlers()
    try:
        _run(args, services)
        if not args.no_wait:
            print("Press Ctrl-C to stop every demo process.", flush=True)
            stop.wait()
    except (DemoStopped, KeyboardInterrupt) as exc:
        print(f"stopping the demo ({exc or 'SIGINT'}) ...", flush=True)
    finally:
        # Children lead their own sessions (a terminal's Ctrl-C does not reach them): stop each one.
        for svc in reversed(services):
            svc.stop()
        print("demo stopped", flush=True)
    return 0


def _run(args: argparse.Namespace, services: list[Service]) -> None:
    plan = plan_llm(args)
    ls_cfg, env, backend_url = _start_services(args, plan, services)
    ready = _prepare_project(args, ls_cfg, env, backend_url)
    _print_ready(args, plan, ls_cfg, backend_url, **ready)


def backend_env(args: argparse.Namespace, plan: LLMPlan, ls_cfg: LabelStudioConfig) -> dict[str, str]:
    """The settings the backend, the worker and the demo's own first batch share."""
    return {
        **plan.backend_env,
        "LLMAAA_DATA_DIR": str(args.state.resolve() / "backend"),
        "LABEL_STUDIO_URL": ls_cfg.url,
        "LABEL_STUDIO_API_KEY": ls_cfg.token,
        "REDIS_URL": args.redis_url,
        "MIN_NEW_ANNOTATIONS": "5",
        # Converged training (early stopping on the meta set's entity F1), not a fixed small cap: a student
        # stopped at 4 epochs scored F1 0.0 in both demo rounds (issue 11).
        "RETRAIN_MAX_EPOCHS": str(args.max_epochs),
        "RETRAIN_PATIENCE": "3",
        # Each round LLM-annotates its picks: with the local model that is seconds a task.
        "ACQUISITION_BATCH": "20" if plan.kind == "simulated" else "10",
    }


def _start_services(args: argparse.Namespace, plan: LLMPlan, services: list[Service]
                    ) -> tuple[LabelStudioConfig, dict[str, str], str]:
    """Label Studio, the LLM, Redis, the backend and a worker; each appended once it runs."""
    # Checked before anything starts: Label Studio's first start alone takes minutes.
    if plan.kind == "local" and (missing := local_llm_missing()):
        raise SystemExit(f"--llm local: {missing}")
    state: Path = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    for port in (args.ls_port, args.backend_port, args.llm_port):
        if port_open("127.0.0.1", port):
            raise SystemExit(f"port {port} is in use: stop what listens there, or pass another --*-port")
    ls_cfg = LabelStudioConfig(data_dir=state / "label-studio", port=args.ls_port)
    print(f"starting Label Studio {ls_cfg.url} (the first start runs migrations, ~30 s) ...", flush=True)
    services.append(start_label_studio(ls_cfg, timeout=args.ls_timeout))

    print(f"starting {plan.description} at {plan.base_url} ...", flush=True)
    llm = spawn(plan.service_name, plan.command, plan.base_url, state / f"{plan.service_name}.log")
    services.append(llm)
    wait_until(llm, http_ok(f"{plan.base_url}/models"), plan.ready_timeout_s)

    redis_svc = ensure_redis(args.redis_url, state / "redis")
    services.append(redis_svc)
    print(f"Redis at {args.redis_url} ({'started by the demo' if redis_svc.proc else 'already running'})", flush=True)
    env = backend_env(args, plan, ls_cfg)
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    print(f"starting the backend at {backend_url} ...", flush=True)
    # 300 s: importing torch takes a minute on a busy box.
    services.append(start_backend(env, state, timeout=300, port=args.backend_port, log_name="backend.log"))
    services.append(start_worker(env, state, log_name="worker.log"))
    return ls_cfg, env, backend_url


def _prepare_project(args: argparse.Namespace, ls_cfg: LabelStudioConfig, env: dict[str, str],
                     backend_url: str) -> dict[str, Any]:
    """The demo project: tasks, gold-verified stand-in annotations, the first LLM batch."""
    from backend.labelstudio import connect
    from backend.settings import Settings
    from backend.setup_project import preannotate, setup_project

    settings = Settings(**{k.lower(): v for k, v in env.items()})
    ls = connect(ls_cfg.url, ls_cfg.token)
    train = args.data / "train.jsonl"
    report = setup_project(ls, settings, DEMO_TITLE, args.labels, train,
                           args.tasks, backend_url, preannotate_n=0)
    verified = _verify_some_with_gold(ls, report.project_id, train, args.verified)
    batch = first_batch_size(args)
    print(f"pre-annotating the first {batch} tasks with the LLM ...", flush=True)
    began = time.monotonic()
    stored, failed, version = _wait_interruptibly(
        lambda: preannotate(ls, report.project_id, settings, batch))
    return {"report": report, "verified": verified, "stored": stored, "failed": failed, "version": version,
            "batch_seconds": time.monotonic() - began}


T = TypeVar("T")


def _wait_interruptibly(work: Callable[[], T]) -> T:
    """Run `work` in a thread and wait for it here, where a stop signal is raised at once.

    The annotator's thread pool finishes every queued call before an exception leaves it: with the local
    model, seconds a task, Ctrl-C during the first batch would wait for all of them. Raised here instead,
    the cleanup stops the LLM first, and the calls still queued then fail at once.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="demo-first-batch", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def ready_headline(plan: LLMPlan) -> str:
    """The summary's first line: which LLM is annotating, so nobody mistakes one for the other."""
    if plan.kind == "simulated":
        return "llmaaa demo is ready (the LLM is a SIMULATION answering from BC5CDR gold labels with noise)."
    return (f"llmaaa demo is ready: {plan.description} is annotating, not a simulation.\n"
            "  It is SLOW (seconds per task on a CPU) and a weak annotator (entity F1 about 0.3 on BC5CDR, "
            "docs/local-llm.md).")


def _print_ready(args: argparse.Namespace, plan: LLMPlan, ls_cfg: LabelStudioConfig, backend_url: str,
                 report: Any, verified: int, stored: int, failed: int, version: str, batch_seconds: float) -> None:
    state: Path = args.state.resolve()
    asked = stored + failed
    per_task = f", {batch_seconds / asked:.1f} s a task" if asked else ""
    print(
        "\n".join([
            "",
            ready_headline(plan),
            f"  Label Studio:  {ls_cfg.url}/projects/{report.project_id}/data",
            f"  login:         {ls_cfg.username} / {ls_cfg.password}",
            f"  tasks:         {report.imported} imported now ({report.skipped_existing} were already there)",
            f"  verified:      {verified} tasks annotated with gold labels (stand-in human, k-NN demo pool)",
            f"  pre-annotated: {stored} tasks as {version!r} in {batch_seconds:.0f} s{per_task} ({failed} not "
            "annotated: marked in llm_status, retried in the background)",
            f"  LLM:           {plan.base_url} (log: {state / (plan.service_name + '.log')})",
            f"  backend:       {backend_url}  (metrics: {backend_url}/metrics)",
            "  retraining:    submit 5 annotations (or run `.venv/bin/llmaaa demo-annotate`): an RQ worker",
            f"                 retrains the student and re-orders the queue; `.venv/bin/llmaaa status --project "
            f"{report.project_id}` (with LLMAAA_DATA_DIR={state / 'backend'}) shows it",
            f"  logs:          {state}",
            "",
        ]),
        flush=True,
    )


def _verify_some_with_gold(ls: Any, project_id: int, train: Path, n: int, only_new: bool = False) -> int:
    """Annotate `n` tasks with their gold spans, as a human verifier would (only for the demo)."""
    from backend.labelstudio import iter_tasks
    from training.data import load_split

    gold = {ex.id: ex for ex in load_split(train)}
    done = 0
    for task in iter_tasks(ls, project_id):
        if done >= n:
            break
        if task.get("annotations"):
            done += 0 if only_new else 1
            continue
        ex = gold.get(str(task["data"].get("ref_id")))
        if ex is None:
            continue
        result = [
            {"from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": s.start, "end": s.end, "text": ex.text[s.start : s.end], "labels": [s.label]}}
            for s in ex.spans
        ]
        ls.annotations.create(id=task["id"], result=result)
        done += 1
    return done


def cmd_demo_annotate(args: argparse.Namespace) -> int:
    """Annotate the next `n` unannotated demo tasks with gold labels; each save fires the webhook."""
    from backend.labelstudio import connect
    from backend.setup_project import find_project

    ls = connect(args.ls_url, args.token)
    project_id = args.project
    if project_id is None:
        found = find_project(ls, DEMO_TITLE)
        if found is None:
            raise SystemExit(f"no project {DEMO_TITLE!r} at {args.ls_url}: run `make demo` first")
        project_id = int(found.id)
    done = _verify_some_with_gold(ls, project_id, args.data / "train.jsonl", args.n, only_new=True)
    print(f"submitted {done} gold annotations to project {project_id} (a stand-in human); the webhook "
          "queues a retrain once enough new annotations arrive", flush=True)
    return 0
