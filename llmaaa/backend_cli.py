"""Backend subcommands (they run or drive the ML backend; the CLI layer, so llmaaa modules are in reach):
  serve          [--host H] [--port N] [--threads N] [--dev] [--control-socket PATH]
  worker         [--burst] [--name NAME]
  setup-project  --title T --labels FILE [--data FILE] [--docs PATH] [--backend-url URL] [--preannotate N]
  acquire        --project ID [--strategy S] [--batch N] [--suspect-fraction F] [--seed N]
  status         --project ID
  costs          [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Container
from pathlib import Path
from typing import Any

from llmaaa.cli import positive_int, project_id

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the Label Studio ML backend (LLM pre-annotations)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9090)
    serve.add_argument("--threads", type=positive_int, default=16, help="gunicorn threads (one worker process)")
    serve.add_argument("--dev", action="store_true", help="Flask's threaded development server instead of gunicorn")
    serve.add_argument("--control-socket", type=Path, metavar="PATH",
                       help="gunicorn's control socket for `gunicornc`, a path of this instance's own "
                            "(default: none; gunicorn's default path is shared by every instance on the host)")
    serve.set_defaults(func=cmd_serve)

    setup = sub.add_parser("setup-project", help="create/update a Label Studio NER project wired to the backend")
    setup.add_argument("--title", required=True)
    setup.add_argument("--labels", type=Path, required=True, help="labels file: JSON {label: description}")
    setup.add_argument("--data", type=Path, help="tasks: ../shared/data-style .jsonl, or .txt (a line a task)")
    setup.add_argument("--limit", type=int, help="import at most this many tasks from --data")
    setup.add_argument("--docs", type=Path, help="raw documents (folder of .txt, .jsonl, .csv): split into sentence "
                       "tasks keyed by document id and offset (`llmaaa import-docs` has the splitting options)")
    setup.add_argument("--backend-url", help="connect this ML backend (and its webhook) to the project")
    setup.add_argument("--preannotate", type=int, default=0, metavar="N",
                       help="push LLM pre-annotations for N tasks now (bulk, with a progress bar)")
    setup.add_argument("--ls-url", help="Label Studio URL (default: LABEL_STUDIO_URL)")
    setup.set_defaults(func=cmd_setup_project)

    acquire = sub.add_parser("acquire", help="one acquisition round: score, select, LLM-annotate, reorder the queue")
    acquire.add_argument("--project", type=project_id, required=True, metavar="ID")
    acquire.add_argument("--strategy", help="random, entropy, least_confidence, mnlp, kmeans, coreset, hybrid, "
                         "weighted_hybrid, bald, density_hybrid (default: ACQUISITION_STRATEGY, as the retrain "
                         "job's rounds)")
    acquire.add_argument("--batch", type=positive_int, default=50)
    acquire.add_argument("--suspect-fraction", type=float, default=0.0,
                         help="share of the queue given to LLM labels the student distrusts (low learned weight)")
    acquire.add_argument("--seed", type=int, default=0)
    acquire.add_argument("--budget-words", type=positive_int, metavar="N",
                         help="select the tasks that fit in N words to review (acquisition.cost) instead of --batch")
    acquire.set_defaults(func=cmd_acquire)

    worker = sub.add_parser("worker", help="an RQ worker that runs retrain jobs (run several to scale out)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--name", help="worker name (default: host and pid)")
    worker.set_defaults(func=cmd_worker)

    status = sub.add_parser("status", help="model versions, last training metrics and job state of a project")
    status.add_argument("--project", type=project_id, required=True, metavar="ID")
    status.set_defaults(func=cmd_status)

    costs = sub.add_parser("costs", help="LLM calls, tokens and cost from the ledger")
    costs.add_argument("--json", action="store_true")
    costs.set_defaults(func=cmd_costs)


def gunicorn_settings(args: argparse.Namespace, known: Container[str]) -> dict[str, Any]:
    """gunicorn settings for `serve`; `known` are the setting names this gunicorn has.

    gunicorn >= 25.1 opens a control socket at one fixed default path per user ($XDG_RUNTIME_DIR or
    ~/.gunicorn/gunicorn.ctl): a second instance on the host took it over and deleted it on exit. So it is
    off unless `--control-socket` names a path for this instance.
    """
    # One process: the reply cache, demo index and model registry are in memory.
    settings: dict[str, Any] = {"bind": f"{args.host}:{args.port}", "workers": 1, "threads": args.threads,
                                "worker_class": "gthread", "timeout": 300, "accesslog": None}
    if "control_socket_disable" not in known:  # older gunicorn: no control socket at all
        if args.control_socket:
            raise ValueError("--control-socket needs gunicorn >= 25.1")
        return settings
    if args.control_socket:
        settings["control_socket"] = str(Path(args.control_socket).absolute())
    else:
        settings["control_socket_disable"] = True
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from gunicorn.config import Config

    try:  # checked before the app loads models, so a bad option fails fast
        settings = gunicorn_settings(args, Config().settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from backend.app import create_app

    app = create_app()
    if args.dev:
        app.run(host=args.host, port=args.port, threaded=True)
        return 0
    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    _Gunicorn().run()
    return 0


def cmd_setup_project(args: argparse.Namespace) -> int:
    from backend.labelstudio import LabelStudioError, connect
    from backend.settings import get_settings
    from backend.setup_project import setup_project

    settings = get_settings()
    url = args.ls_url or settings.label_studio_url
    key = settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else ""
    try:
        if args.ls_url:
            settings = settings.model_copy(update={"label_studio_url": args.ls_url})
        ls = connect(url or "", key)
        docs = getattr(args, "docs", None)
        # With --docs, pre-annotation waits until the documents are in (it would find no tasks before).
        report = setup_project(ls, settings, args.title, args.labels, args.data, args.limit, args.backend_url,
                               0 if docs else args.preannotate)
        out = dict(report.__dict__)
        if docs:
            from backend.setup_project import preannotate
            from llmaaa.documents import import_documents

            problems: list[str] = []
            counts = import_documents(ls, report.project_id, docs, on_problem=lambda p: problems.append(str(p)))
            out.update(docs_imported=counts.imported, docs_skipped_existing=counts.skipped_existing,
                       docs_problems=problems[:50])
            if args.preannotate > 0:
                out["preannotated"], out["not_annotated"], out["model_version"] = preannotate(
                    ls, report.project_id, settings, args.preannotate)
    except (LabelStudioError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    from backend.annotator.ledger import CostLedger
    from backend.settings import get_settings

    settings = get_settings()
    summary = CostLedger(settings.llmaaa_data_dir / "costs.jsonl", prices_file=settings.llm_prices_file).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'model':30} {'calls':>7} {'cached':>7} {'prompt tok':>11} {'compl tok':>10} {'USD':>9}")
    for model, row in summary.items():
        print(f"{model:30} {row['calls']:>7} {row['cached_calls']:>7} {row['prompt_tokens']:>11} "
              f"{row['completion_tokens']:>10} {row['usd']:>9.4f}")
    if not summary:
        print("(no LLM calls recorded yet)")
    return 0


def _ls_from_settings() -> Any:
    from backend.labelstudio import connect
    from backend.settings import get_settings

    s = get_settings()
    key = s.label_studio_api_key.get_secret_value() if s.label_studio_api_key else ""
    return connect(s.label_studio_url or "", key)


def cmd_acquire(args: argparse.Namespace) -> int:
    from acquisition.base import AcquisitionError
    from backend.acquire import acquire_round
    from backend.labelstudio import LabelStudioError
    from backend.settings import get_settings

    settings = get_settings()
    try:
        report = acquire_round(_ls_from_settings(), args.project, settings,
                               args.strategy, args.batch,  # None: acquire_round applies ACQUISITION_STRATEGY
                               args.suspect_fraction, progress=True, seed=args.seed,
                               budget_words=args.budget_words)
    except (LabelStudioError, AcquisitionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = report.to_dict()
    out["order"] = out["order"][:20]
    print(json.dumps(out, indent=2))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import redis
    from rq import Worker

    from backend.jobs import QUEUE_NAME, safe_url
    from backend.settings import get_settings

    settings = get_settings()
    conn = redis.Redis.from_url(settings.redis_url)
    try:
        conn.ping()
    except redis.RedisError as exc:
        print(f"error: Redis at {safe_url(settings.redis_url)} does not answer ({exc})", file=sys.stderr)
        return 2
    # Models load lazily inside each job (never at import), so forking work-horses stay light.
    worker = Worker([QUEUE_NAME], connection=conn, name=args.name)
    worker.work(burst=args.burst, with_scheduler=False)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from backend.settings import get_settings
    from backend.state import ProjectState
    from backend.student import model_store

    settings = get_settings()
    state = ProjectState(settings.llmaaa_data_dir, args.project).read()
    out: dict[str, Any] = {"project": args.project, "state": state,
                           "student_versions": model_store(settings.llmaaa_data_dir, args.project).versions()}
    if settings.redis_url:
        import redis

        from backend.jobs import queue_status

        try:
            out["queue"] = queue_status(redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1),
                                        args.project)
        except redis.RedisError as exc:
            out["queue"] = {"error": f"Redis unavailable: {type(exc).__name__}"}
    print(json.dumps(out, indent=2, default=str))
    return 0
