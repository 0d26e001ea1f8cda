"""Bulk pre-annotation throughput against the simulated LLM at a fixed latency.

    .venv/bin/python -m benchmarks.annotator_throughput [--latency-ms 300] [--concurrency 1 8 32]

Throughput is compared with the ideal `concurrency / latency` (every worker always waiting on one call).
All settings run side by side in one process against one simulated server, each on fresh texts and an
empty reply cache, so the cache never helps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from backend.annotator.annotator import LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import LLMClient
from backend.annotator.ledger import CostLedger
from backend.annotator.prompt import PromptTemplate
from backend.labeling_config import LabelSchema, LabelSpec
from benchmarks._common import DATA, serve_in_thread, write_result
from llmaaa.simulation.server import FaultConfig, create_app
from llmaaa.simulation.teacher import SimulatedTeacher
from training.data import load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--calls-per-worker", type=int, default=8, help="texts per setting = this × concurrency")
    ap.add_argument("--min-calls", type=int, default=24)
    args = ap.parse_args()

    examples = load_split(args.data / "dev.jsonl")
    teacher = SimulatedTeacher(examples, noise=0.0)
    schema = LabelSchema("label", "text", "text", [LabelSpec("Chemical", "a chemical or drug"),
                                                   LabelSpec("Disease", "a disease")])
    app = create_app(teacher, FaultConfig(latency_ms=args.latency_ms))
    rows = []
    offset = 0
    with serve_in_thread(app) as url, tempfile.TemporaryDirectory() as tmp:
        for c in args.concurrency:
            n = max(args.min_calls, args.calls_per_worker * c)
            texts = [ex.text for ex in examples[offset : offset + n]]
            offset += n
            client = LLMClient(f"{url}/v1", "bench", "simulated-llm", timeout=30, max_retries=0)
            annotator = LLMAnnotator(client, schema, PromptTemplate.load(),
                                     ReplyCache(Path(tmp) / f"cache-{c}"), CostLedger(Path(tmp) / "costs.jsonl"))
            started = time.perf_counter()
            outcomes = annotator.annotate_many(texts, concurrency=c, progress=False)
            elapsed = time.perf_counter() - started
            ok = sum(o.ok for o in outcomes)
            rate = len(texts) / elapsed
            ideal = c / (args.latency_ms / 1000)
            rows.append({"concurrency": c, "texts": len(texts), "ok": ok, "seconds": round(elapsed, 2),
                         "tasks_per_s": round(rate, 2), "ideal_tasks_per_s": round(ideal, 2),
                         "ratio_to_ideal": round(rate / ideal, 3)})
    print(f"Bulk pre-annotation, simulated LLM latency {args.latency_ms:.0f} ms\n")
    print("| concurrency | texts | tasks/s | ideal (c/latency) | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['texts']} | {r['tasks_per_s']} | {r['ideal_tasks_per_s']} | "
              f"{r['ratio_to_ideal']} |")
    write_result("annotator_throughput", {"latency_ms": args.latency_ms, "rows": rows})


if __name__ == "__main__":
    main()
