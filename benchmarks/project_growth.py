"""What new project ids cost the web backend: resident memory, threads and disk (issue 12, item 5).

    .venv/bin/python -m benchmarks.project_growth [--projects 500]

Any client that reaches the backend can name any project id. For each of N ids never seen before this
sends `/setup` and a one-task `/predict` (Flask test client; an in-process LLM that answers at once;
Label Studio not configured, so no project is confirmed), then reports the growth of RSS, live threads,
the bytes under `projects/` and the number of project directories.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.annotator.client import Completion
from backend.app import create_app
from backend.labeling_config import LabelSpec, build_label_config
from backend.registry import ModelRegistry
from backend.settings import Settings

CONFIG = build_label_config([LabelSpec("Chemical", "a drug or chemical"), LabelSpec("Disease", "a disease")])


class InstantLLM:
    model = "instant"

    def complete(self, messages: Sequence[dict[str, str]], json_schema: dict[str, Any] | None = None
                 ) -> Completion:
        return Completion('{"entities": [{"span": "aspirin", "type": "Chemical"}]}', 10, 5, self.model, 0.0)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk(root: Path) -> tuple[int, int]:
    """Bytes of files under `root/projects`, and how many project directories there are."""
    projects = root / "projects"
    if not projects.exists():
        return 0, 0
    size = sum(p.stat().st_size for p in projects.rglob("*") if p.is_file())
    return size, sum(1 for p in projects.iterdir() if p.is_dir())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(llmaaa_data_dir=root, llm_model="instant", label_studio_url=None,
                            label_studio_api_key=None, redis_url="", predict_deadline_s=10.0)
        registry = ModelRegistry(settings)
        registry.runtime.client = InstantLLM()  # before any model is built: every annotator uses it
        client = create_app(settings, registry).test_client()

        def one(pid: int) -> None:
            assert client.post("/setup", json={"project": f"{pid}.1700000000", "schema": CONFIG}).status_code == 200
            task = {"id": 1, "data": {"text": f"aspirin {pid}"}}
            resp = client.post("/predict", json={"tasks": [task], "project": pid, "label_config": CONFIG})
            assert resp.status_code == 200, resp.get_data(as_text=True)

        one(1)  # warm-up: imports, the shared cache and ledger exist before the baseline
        gc.collect()
        before = (rss_mb(), threading.active_count(), *disk(root))
        for i in range(args.projects):
            one(100_000 + i)
        gc.collect()
        after = (rss_mb(), threading.active_count(), *disk(root))
        result = {
            "projects": args.projects,
            "rss_mb_before": round(before[0], 1), "rss_mb_after": round(after[0], 1),
            "rss_mb_added": round(after[0] - before[0], 1),
            "threads_added": after[1] - before[1],
            "projects_disk_bytes_added": after[2] - before[2],
            "project_dirs_added": after[3] - before[3],
            "models_in_memory": len(registry.all()),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
