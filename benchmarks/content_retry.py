"""Which changed request turns a looping / malformed reply into an answer? (the content-retry ladder)

Takes the sentences an `llmaaa llm-eval` run could not annotate because of the reply itself (`cut_off`,
`malformed_reply`: `backend.annotator.retry_ladder.CONTENT_FAILURES`) and asks the LLM about each of them
again with every candidate request variant, through the backend's own annotator (same prompt, demos,
client, parsing and grounding; `LLMAnnotator.annotate(text, variant)`), so what it measures is exactly what
a retry sends. For each variant: how many it turned into parsed answers, the entity F1 on those (gold from
the run's predictions), latency and tokens; and for the ladder in `backend.annotator.retry_ladder` (or
`--ladder a,b,c`), how many a retrier that climbs it recovers by each rung, at what number of calls.

The default source is the prompt grid's BC5CDR base cell (k-NN, k=5, hints, JSON schema; Gemma 3 270M;
n=200: 17 `cut_off`), read-only; its `results.json` gives the prompt settings to rebuild the same requests.
Calls per sentence are ordered so that variants sharing a prompt follow each other (llama.cpp reuses the
prompt's KV cache across calls, so a sampled variant of an already computed prompt costs only its reply).

    llmaaa local-llm --port 8093 --threads 1 &
    python -m benchmarks.content_retry --base-url http://127.0.0.1:8093/v1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from backend.annotator.retry_ladder import CONTENT_FAILURES, LADDER, RequestVariant
from benchmarks._common import DATA, REPO, RESULTS, machine
from training.data import label_set, load_split, sample
from training.spans import Span

log = logging.getLogger("content_retry")

SOURCE = RESULTS / "prompt" / "bc5cdr" / "base"
OUT = REPO / ".llmaaa" / "content-retry"
# Candidates, each at the rung it would hold on a ladder (a sampled rung's seed comes from the text and rung).
CANDIDATES: dict[str, RequestVariant] = {
    "base": RequestVariant(0, "base"),
    "t0.3": RequestVariant(2, "sampled", temperature=0.3),
    "t0.7": RequestVariant(3, "sampled", temperature=0.7),
    "half": RequestVariant(1, "fewer demos", demo_share=0.5),
    "half-t0.3": RequestVariant(2, "fewer demos, sampled", demo_share=0.5, temperature=0.3),
    "zero": RequestVariant(1, "zero-shot", demo_share=0.0),
}


def failed_rows(source: Path, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The source run's content failures (its predictions.jsonl) and its config (results.json)."""
    config = json.loads((source / "results.json").read_text())["config"]
    rows = [json.loads(line) for line in (source / "predictions.jsonl").read_text().splitlines() if line.strip()]
    failed = [r for r in rows if not r["ok"] and (r["error"] or "").split(":", 1)[0] in CONTENT_FAILURES]
    return failed[:limit] if limit else failed, config


def build_annotator(config: dict[str, Any], base_url: str, cache: Path, embeddings: Path) -> Any:
    """The backend's annotator on the source run's prompt settings (schema, k-NN demos, template, tokens)."""
    from llmaaa.llm_eval import CachedEmbedder, build_schema, knn_index, label_descriptions, llm_services

    data = DATA / Path(config["data"]).name
    train = sample(load_split(data / "train.jsonl"), config.get("demo_pool"), config["seed"])
    schema = build_schema(label_set(train), label_descriptions(data), config["hints"])
    demos = knn_index(train, CachedEmbedder(embeddings), config["k"]) if config["demos"] == "knn" else None
    services = llm_services(base_url=base_url, api_key="none", model=config["model"], cache=cache,
                            ledger=cache / "costs.jsonl", k=config["k"], timeout=600, max_retries=1,
                            max_tokens=config["max_tokens"], json_schema=config["json_schema"],
                            prompt_version=config["prompt_version"])
    return services.annotator(schema, demos)


def ask_all(annotator: Any, rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Every sentence on every variant; one record per call."""
    calls = []
    for i, row in enumerate(rows):
        for name in names:
            began = time.monotonic()
            outcome = annotator.annotate(row["text"], CANDIDATES[name])
            calls.append({"id": row["id"], "variant": name, "ok": outcome.ok, "reason": outcome.reason,
                          "seconds": round(time.monotonic() - began, 2), "cached": outcome.cached,
                          "completion_tokens": outcome.usage.get("completion_tokens"),
                          "pred": [[s.start, s.end, s.label] for s in outcome.spans]})
            log.info("%d/%d %s %s: %s in %.1f s", i + 1, len(rows), row["id"], name,
                     "answered" if outcome.ok else outcome.reason, calls[-1]["seconds"])
    return calls


def scores(rows: list[dict[str, Any]], calls: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """A variant's recoveries, F1 on the recovered sentences and F1 with the others counted as empty."""
    from training.metrics import entity_scores

    gold = {r["id"]: [Span(*s) for s in r["gold"]] for r in rows}
    text = {r["id"]: r["text"] for r in rows}
    mine = {c["id"]: c for c in calls if c["variant"] == name}
    ok = [i for i in gold if mine[i]["ok"]]
    pred = {i: [Span(*s) for s in mine[i]["pred"]] for i in ok}
    on_ok = entity_scores([gold[i] for i in ok], [pred[i] for i in ok], [text[i] for i in ok]) if ok else None
    strict = entity_scores(list(gold.values()), [pred.get(i, []) for i in gold], [text[i] for i in gold])
    return {"recovered": len(ok), "of": len(gold), "f1_recovered": on_ok["f1"] if on_ok else None,
            "precision": on_ok["precision"] if on_ok else None, "recall": on_ok["recall"] if on_ok else None,
            "f1_failed_as_empty": strict["f1"], "reasons": dict(Counter(c["reason"] for c in mine.values() if
                                                                          not c["ok"])),
            "seconds_mean": round(sum(c["seconds"] for c in mine.values()) / max(1, len(mine)), 2)}


def climb(rows: list[dict[str, Any]], calls: list[dict[str, Any]], ladder: list[str]) -> list[dict[str, Any]]:
    """A retrier climbing `ladder` (rung 0 first): recovered by each rung, cumulative, the calls made, and the
    F1 of the answers so far (each sentence's answer from the rung that recovered it)."""
    from training.metrics import entity_scores

    by = {(c["id"], c["variant"]): c for c in calls}
    gold = {r["id"]: ([Span(*s) for s in r["gold"]], r["text"]) for r in rows}
    open_ids = [r["id"] for r in rows]
    steps, calls_made, answers = [], 0, {}
    for name in ladder:
        calls_made += len(open_ids)
        now = [i for i in open_ids if by[(i, name)]["ok"]]
        answers.update({i: [Span(*s) for s in by[(i, name)]["pred"]] for i in now})
        open_ids = [i for i in open_ids if i not in now]
        ids = list(answers)
        f1 = entity_scores([gold[i][0] for i in ids], [answers[i] for i in ids], [gold[i][1] for i in ids])["f1"] \
            if ids else None
        steps.append({"rung": name, "recovered_here": len(now), "recovered_total": len(answers),
                      "calls_total": calls_made, "still_failing": len(open_ids), "f1_recovered": f1})
    return steps


def ladder_names() -> list[str]:
    """The backend's ladder as candidate names (a rung with no candidate of the same request is left out)."""
    names = []
    for rung in LADDER:
        match = [n for n, v in CANDIDATES.items() if v == rung]
        if match:
            names.append(match[0])
    return names


def table(summary: dict[str, dict[str, Any]], k: int) -> str:
    lines = ["| variant | request | answered | F1 on those | P | R | F1 (fail=empty) | other failures | s/call |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        f1 = "-" if s["f1_recovered"] is None else f"{s['f1_recovered']:.3f}"
        p = "-" if s["precision"] is None else f"{s['precision']:.3f}"
        r = "-" if s["recall"] is None else f"{s['recall']:.3f}"
        variant = CANDIDATES[name]
        lines.append(f"| {name} | {variant.describe(variant.k(k))} | {s['recovered']}/{s['of']} | {f1} | {p} | {r} | "
                     f"{s['f1_failed_as_empty']:.3f} | {s['reasons'] or '-'} | {s['seconds_mean']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), required=False)
    p.add_argument("--from", dest="source", type=Path, default=SOURCE,
                   help="an llm-eval output folder (predictions.jsonl, results.json)")
    p.add_argument("--variants", default=",".join(CANDIDATES), help=f"of {', '.join(CANDIDATES)}")
    p.add_argument("--ladder", default=None, help="candidate names in rung order (default: the backend's LADDER)")
    p.add_argument("--limit", type=int, default=None, help="at most this many failed sentences")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--embeddings", type=Path, default=OUT / "embeddings.npz")
    p.add_argument("--report-only", action="store_true",
                   help="no calls: the tables again from OUT/results.json (e.g. for another --ladder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "backend.annotator.annotator", "backend.annotator.client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rows, config = failed_rows(args.source, args.limit)
    if args.report_only:
        result = json.loads((args.out / "results.json").read_text())
        calls, names = result["calls"], list(result["variants"])
        rows = [r for r in rows if any(c["id"] == r["id"] for c in calls)]
    else:
        if not args.base_url:
            p.error("no LLM endpoint: pass --base-url (of `llmaaa local-llm --threads 1`) or set OPENAI_BASE_URL")
        names = [n for n in args.variants.split(",") if n]
        log.info("%d content failures in %s; variants %s", len(rows), args.source, ", ".join(names))
        annotator = build_annotator(config, args.base_url, args.out / "cache", args.embeddings)
        began = time.monotonic()
        calls = ask_all(annotator, rows, names)
        result = {"source": str(args.source), "sentences": len(rows),
                  "model_seconds": round(time.monotonic() - began, 1), "calls": calls,
                  "machine": {**machine(), "load_avg": os.getloadavg()}}
    summary = {name: scores(rows, calls, name) for name in names}
    ladder = [n for n in (args.ladder.split(",") if args.ladder else ladder_names()) if n in names]
    result.update(variants=summary, ladder=climb(rows, calls, ladder))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(table(summary, config["k"]))
    print(json.dumps(result["ladder"], indent=2))
    print(f"{len(rows)} sentences, {len(calls)} calls, {result['model_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
