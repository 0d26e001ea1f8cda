"""Backend overhead per task with a zero-latency simulated LLM, at p50 and p99.

    .venv/bin/python -m benchmarks.backend_overhead [--requests 300]

Side by side in one run, each request for one task with a text never seen before (so the reply cache
does not help):
- `llm call`: the LLM client alone calling the simulated server (prompt, HTTP, parse);
- `/predict`: Label Studio's request to the backend over HTTP (Flask → model → annotator → LLM →
  grounding → LS regions), the backend served by werkzeug in a thread;
- `/predict cached`: the same tasks again (reply cache hits: the backend's own cost).
Overhead = `/predict` − `llm call`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import httpx

from backend.annotator.client import LLMClient
from backend.annotator.prompt import PromptTemplate
from backend.app import create_app as create_backend
from backend.labeling_config import LabelSpec, build_label_config, parse_label_config
from backend.settings import Settings
from benchmarks._common import DATA, percentile, serve_in_thread, write_result
from llmaaa.simulation.server import create_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import load_split


def stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50) * 1000, 2), "p99_ms": round(percentile(values, 99) * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    examples = load_split(args.data / "dev.jsonl")[: 2 * args.requests]
    config = build_label_config([LabelSpec("Chemical", "a chemical or drug"), LabelSpec("Disease", "a disease")])
    with serve_in_thread(create_app(SimulatedTeacher(examples, noise=0.0))) as llm, \
            tempfile.TemporaryDirectory() as tmp:
        settings = Settings(llmaaa_data_dir=Path(tmp), openai_base_url=f"{llm}/v1", llm_model="sim",
                            label_studio_url=None, llm_max_retries=0)
        with serve_in_thread(create_backend(settings)) as backend, httpx.Client(timeout=30) as http:
            http.post(f"{backend}/setup", json={"project": "1.0", "schema": config}).raise_for_status()
            client = LLMClient(f"{llm}/v1", "bench", "sim", max_retries=0)
            template, schema = PromptTemplate.load(), parse_label_config(config)
            direct, predict, cached = [], [], []
            for i in range(args.requests):
                a, b = examples[2 * i].text, examples[2 * i + 1].text
                t = time.perf_counter()
                client.complete(template.render(schema.labels, [], a))
                direct.append(time.perf_counter() - t)
                body = {"tasks": [{"id": i, "data": {"text": b}}], "project": "1.0"}
                t = time.perf_counter()
                http.post(f"{backend}/predict", json=body).raise_for_status()
                predict.append(time.perf_counter() - t)
                t = time.perf_counter()
                http.post(f"{backend}/predict", json=body).raise_for_status()
                cached.append(time.perf_counter() - t)
    rows = {"llm call": stats(direct), "/predict": stats(predict), "/predict cached": stats(cached)}
    overhead = {k: round(rows["/predict"][k] - rows["llm call"][k], 2) for k in ("p50_ms", "p99_ms")}
    print(f"Backend overhead per task, zero-latency simulated LLM, {args.requests} requests\n")
    print("| path | p50 ms | p99 ms |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ms']} | {r['p99_ms']} |")
    print(f"| overhead (/predict − llm call) | {overhead['p50_ms']} | {overhead['p99_ms']} |")
    write_result("backend_overhead", {"requests": args.requests, "rows": rows, "overhead": overhead})


if __name__ == "__main__":
    main()
