"""`llmaaa demo` (`make demo`): the whole loop on embedded defaults, on this machine.

It starts Label Studio (SQLite), a local Redis (the one at REDIS_URL if it answers, else its own), the
simulated LLM on BC5CDR, the backend and an RQ worker; sets up a project of a few hundred BC5CDR sentences;
stands in for a human on a few tasks (gold labels, so the k-NN demonstrations have verified examples to
draw from); pre-annotates the first batch; prints where to log in; and stops every child process on
Ctrl-C. Submitting annotations in the UI, or `llmaaa demo-annotate`, triggers a retrain: a new student
version, and a re-ordered queue.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from llmaaa.services import (
    REPO_ROOT,
    LabelStudioConfig,
    Service,
    ensure_redis,
    http_ok,
    llmaaa_command,
    port_open,
    spawn,
    start_label_studio,
    wait_until,
)

log = logging.getLogger(__name__)

DEMO_TITLE = "llmaaa demo: BC5CDR chemicals and diseases"
DEFAULT_DATA = Path(os.environ.get("LLMAAA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "bc5cdr"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run Label Studio + simulated LLM + backend on BC5CDR, then wait")
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
    p.add_argument("--preannotate", type=int, default=50, help="first batch of LLM pre-annotations")
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
    ls_cfg, env, backend_url = _start_services(args, services)
    ready = _prepare_project(args, ls_cfg, env, backend_url)
    _print_ready(args, ls_cfg, backend_url, **ready)


def _start_services(args: argparse.Namespace, services: list[Service]
                    ) -> tuple[LabelStudioConfig, dict[str, str], str]:
    """Label Studio, the simulated LLM, Redis, the backend and a worker; each appended once it runs."""
    state: Path = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    for port in (args.ls_port, args.backend_port, args.llm_port):
        if port_open("127.0.0.1", port):
            raise SystemExit(f"port {port} is in use: stop what listens there, or pass another --*-port")
    ls_cfg = LabelStudioConfig(data_dir=state / "label-studio", port=args.ls_port)
    print(f"starting Label Studio {ls_cfg.url} (the first start runs migrations, ~30 s) ...", flush=True)
    services.append(start_label_studio(ls_cfg, timeout=args.ls_timeout))

    llm_url = f"http://127.0.0.1:{args.llm_port}/v1"
    print(f"starting the SIMULATED LLM (noise {args.noise}) at {llm_url} ...", flush=True)
    llm = spawn("fake-llm", llmaaa_command("fake-llm", "--data", str(args.data), "--port", str(args.llm_port),
                                           "--noise", str(args.noise)), llm_url, state / "fake-llm.log")
    services.append(llm)
    wait_until(llm, http_ok(f"{llm_url}/models"), 180)

    redis_svc = ensure_redis(args.redis_url, state / "redis")
    services.append(redis_svc)
    print(f"Redis at {args.redis_url} ({'started by the demo' if redis_svc.proc else 'already running'})", flush=True)
    env = {
        "OPENAI_BASE_URL": llm_url,
        "OPENAI_API_KEY": "simulated",
        "LLM_MODEL": "simulated-llm",
        "LLMAAA_DATA_DIR": str(state / "backend"),
        "LABEL_STUDIO_URL": ls_cfg.url,
        "LABEL_STUDIO_API_KEY": ls_cfg.token,
        "REDIS_URL": args.redis_url,
        "MIN_NEW_ANNOTATIONS": "5",
        # Converged training (early stopping on the meta set's entity F1), not a fixed small cap: a student
        # stopped at 4 epochs scored F1 0.0 in both demo rounds (issue 11).
        "RETRAIN_MAX_EPOCHS": str(args.max_epochs),
        "RETRAIN_PATIENCE": "3",
        "ACQUISITION_BATCH": "20",
    }
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    print(f"starting the backend at {backend_url} ...", flush=True)
    backend = spawn("backend", llmaaa_command("serve", "--port", str(args.backend_port)), backend_url,
                    state / "backend.log", env)
    services.append(backend)
    wait_until(backend, http_ok(f"{backend_url}/health"), 300)  # torch import: a minute on a busy box
    services.append(spawn("worker", llmaaa_command("worker"), "rq", state / "worker.log", env))
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
    stored, failed, version = preannotate(ls, report.project_id, settings, args.preannotate)
    return {"report": report, "verified": verified, "stored": stored, "failed": failed, "version": version}


def _print_ready(args: argparse.Namespace, ls_cfg: LabelStudioConfig, backend_url: str, report: Any,
                 verified: int, stored: int, failed: int, version: str) -> None:
    state: Path = args.state.resolve()
    print(
        "\n".join([
            "",
            "llmaaa demo is ready (the LLM is a SIMULATION answering from BC5CDR gold labels with noise).",
            f"  Label Studio:  {ls_cfg.url}/projects/{report.project_id}/data",
            f"  login:         {ls_cfg.username} / {ls_cfg.password}",
            f"  tasks:         {report.imported} imported now ({report.skipped_existing} were already there)",
            f"  verified:      {verified} tasks annotated with gold labels (stand-in human, k-NN demo pool)",
            f"  pre-annotated: {stored} tasks as {version!r} ({failed} not annotated: marked in llm_status, "
            "retried in the background)",
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
