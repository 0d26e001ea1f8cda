"""Backend subcommands: `serve`, `setup-project`, `costs`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the Label Studio ML backend (LLM pre-annotations)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9090)
    serve.add_argument("--threads", type=int, default=16, help="gunicorn threads (one worker process)")
    serve.add_argument("--dev", action="store_true", help="Flask's threaded development server instead of gunicorn")
    serve.set_defaults(func=cmd_serve)

    setup = sub.add_parser("setup-project", help="create/update a Label Studio NER project wired to the backend")
    setup.add_argument("--title", required=True)
    setup.add_argument("--labels", type=Path, required=True, help="labels file: JSON {label: description}")
    setup.add_argument("--data", type=Path, help="tasks: ../shared/data-style .jsonl, or .txt (a line a task)")
    setup.add_argument("--limit", type=int, help="import at most this many tasks from --data")
    setup.add_argument("--backend-url", help="connect this ML backend (and its webhook) to the project")
    setup.add_argument("--preannotate", type=int, default=0, metavar="N",
                       help="push LLM pre-annotations for N tasks now (bulk, with a progress bar)")
    setup.add_argument("--ls-url", help="Label Studio URL (default: LABEL_STUDIO_URL)")
    setup.set_defaults(func=cmd_setup_project)

    costs = sub.add_parser("costs", help="LLM calls, tokens and cost from the ledger")
    costs.add_argument("--json", action="store_true")
    costs.set_defaults(func=cmd_costs)


def cmd_serve(args: argparse.Namespace) -> int:
    from backend.app import create_app

    app = create_app()
    if args.dev:
        app.run(host=args.host, port=args.port, threaded=True)
        return 0
    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            # One process: the reply cache, demo index and model registry are in memory.
            for key, value in {"bind": f"{args.host}:{args.port}", "workers": 1, "threads": args.threads,
                               "worker_class": "gthread", "timeout": 300, "accesslog": None}.items():
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
        report = setup_project(connect(url or "", key), settings, args.title, args.labels, args.data,
                               args.limit, args.backend_url, args.preannotate)
    except (LabelStudioError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.__dict__, indent=2))
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
