"""Throughput of `llmaaa local-llm` (Gemma 3 270M on llama.cpp): tasks/s and tokens/s for a few server
shapes (instances x threads) and calls in flight, against one sequential call at a time.

The prompts are what the backend sends: ner.<default> with 5 k-NN demonstrations (MiniLM) for BC5CDR dev
sentences, `response_format: json_schema`, temperature 0. Each shape gets a fresh server, one warm-up
call, then the same prompts. The machine's load average is recorded with each figure: on a shared
2-core machine the absolute numbers move with it.

    python -m benchmarks.local_llm_throughput --prompts 12 --shapes 1x2:1,1x1:1,2x1:2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks._common import DATA, REPO, write_result

log = logging.getLogger("local_llm_throughput")


def build_prompts(n: int, seed: int) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    from backend.annotator import PromptTemplate, entities_json_schema
    from llmaaa.llm_eval import CachedEmbedder, build_schema, default_prompt_version, knn_index, label_descriptions
    from training.data import label_set, load_split, sample

    data = DATA / "bc5cdr"
    train = load_split(data / "train.jsonl")
    queries = sample(load_split(data / "dev.jsonl"), n, seed)
    schema = build_schema(label_set(train), label_descriptions(data))
    index = knn_index(train, CachedEmbedder(REPO / ".llmaaa" / "prompt-grid-cache" / "embeddings.npz"), 5)
    template = PromptTemplate.load("ner", default_prompt_version())
    prompts = [template.render(schema.labels, index.nearest(q.text, 5), q.text) for q in queries]
    return prompts, {"type": "json_schema", "json_schema": entities_json_schema(schema.values)}


def measure(url: str, prompts: list[list[dict[str, str]]], fmt: dict[str, Any], in_flight: int) -> dict[str, Any]:
    def call(messages: list[dict[str, str]]) -> tuple[float, dict[str, int]]:
        began = time.monotonic()
        resp = httpx.post(f"{url}/chat/completions", timeout=900, json={
            "model": "local", "messages": messages, "temperature": 0, "max_tokens": 256, "response_format": fmt})
        resp.raise_for_status()
        return time.monotonic() - began, resp.json()["usage"]

    call(prompts[0])  # warm-up: first-call allocations, page cache
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        results = list(pool.map(call, prompts))
    wall = time.monotonic() - began
    lat = [r[0] for r in results]
    prompt_tok = sum(r[1]["prompt_tokens"] for r in results)
    completion_tok = sum(r[1]["completion_tokens"] for r in results)
    return {"tasks": len(prompts), "in_flight": in_flight, "seconds": round(wall, 2),
            "tasks_per_s": round(len(prompts) / wall, 4),
            "prompt_tokens_per_s": round(prompt_tok / wall, 1),
            "completion_tokens_per_s": round(completion_tok / wall, 2),
            "tokens_per_s": round((prompt_tok + completion_tok) / wall, 1),
            "latency_p50_s": round(statistics.median(lat), 2), "latency_max_s": round(max(lat), 2),
            "prompt_tokens_mean": round(prompt_tok / len(prompts), 1),
            "completion_tokens_mean": round(completion_tok / len(prompts), 1),
            "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shapes", default="1x2:1,1x1:1,2x1:2",
                   help="comma-separated INSTANCESxTHREADS:IN_FLIGHT (default 1x2:1,1x1:1,2x1:2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from llmaaa.services import start_local_llm

    prompts, fmt = build_prompts(args.prompts, args.seed)
    rows = []
    for shape in args.shapes.split(","):
        inst_threads, in_flight = shape.split(":")
        instances, threads = (int(x) for x in inst_threads.split("x"))
        svc = start_local_llm(REPO / ".llmaaa" / "local-llm-bench.log", "--concurrency", str(instances),
                              "--threads", str(threads))
        try:
            row = {"instances": instances, "threads_per_instance": threads,
                   **measure(svc.url, prompts, fmt, int(in_flight))}
        finally:
            svc.stop()
        log.info("%s", row)
        rows.append(row)
    path = write_result("local_llm_throughput", {"prompts": args.prompts, "prompt": "ner (backend default), "
                                                 "5 k-NN demos, json_schema", "rows": rows})
    print(json.dumps(rows, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
