"""The SIMULATED teacher's quality vs its noise knob: strict entity-level P/R/F1 on full dev splits.

    .venv/bin/python benchmarks/teacher_noise.py --out /tmp/teacher_noise.json
    .venv/bin/python benchmarks/teacher_noise.py --kind systematic --split train --out /tmp/sys_noise.json

Strict micro scores: a predicted entity counts only with the exact start, end and label of a gold one.
Two readings of the same answers:
- "answer": the character spans the noise model produced (what the simulated LLM means);
- "grounded": the answer's (mention, type) pairs located again in the text by the project's
  `backend.annotator.parsing.ground` (every occurrence, overlaps resolved), i.e. what the pipeline
  (`llmaaa simulate`, the backend) receives. It differs from "answer" when a mention occurs twice.
Scores are means over `--seeds`. The noise values that give a target F1 (a ChatGPT-like teacher
≈ 0.70, a weak one ≈ 0.35) are found by bisection, using that F1 falls monotonically with noise.
`--kind` picks the noise model: "random" (per occurrence) or "systematic" (per surface form).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from llmaaa.simulation.teacher import SimulatedTeacher  # noqa: E402
from training.data import Example, label_set, load_split  # noqa: E402
from training.spans import Span  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
NOISES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TARGETS = {"chatgpt_like": 0.70, "weak": 0.35}


def strict_prf(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> dict[str, float]:
    g = {(i, *s.key()) for i, spans in enumerate(gold) for s in spans}
    p = {(i, *s.key()) for i, spans in enumerate(pred) for s in spans}
    tp = len(g & p)
    precision = tp / len(p) if p else 0.0
    recall = tp / len(g) if g else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def make_grounder(labels: Sequence[str]) -> Callable[[str, list[dict[str, str]]], list[Span]] | None:
    try:
        from backend.annotator.parsing import ground
        from backend.labeling_config import LabelSchema, LabelSpec
    except ImportError as exc:  # the backend is optional for this benchmark
        print(f"(no grounded scores: {exc})", file=sys.stderr)
        return None
    schema = LabelSchema("label", "text", "text", [LabelSpec(lab, lab) for lab in labels])
    return lambda text, pairs: list(ground(text, [(p["span"], p["type"]) for p in pairs], schema).spans)


def evaluate(examples: list[Example], noise: float, seeds: Sequence[int],
             grounder: Callable[[str, list[dict[str, str]]], list[Span]] | None,
             kind: str = "random") -> dict[str, Any]:
    gold = [ex.spans for ex in examples]
    runs: dict[str, list[dict[str, float]]] = {"answer": [], "grounded": []}
    for seed in seeds:
        teacher = SimulatedTeacher(examples, noise=noise, seed=seed, kind=kind)
        answers = [teacher.answer_spans(ex.text) or [] for ex in examples]
        runs["answer"].append(strict_prf(gold, answers))
        if grounder is not None:
            grounded = [grounder(ex.text, [{"span": ex.text[s.start : s.end], "type": s.label} for s in spans])
                        for ex, spans in zip(examples, answers, strict=True)]
            runs["grounded"].append(strict_prf(gold, grounded))
    out: dict[str, Any] = {"noise": noise}
    for view, scores in runs.items():
        if scores:
            out[view] = {k: statistics.fmean(s[k] for s in scores) for k in ("precision", "recall", "f1")}
            out[view]["f1_std"] = statistics.pstdev(s["f1"] for s in scores)
            out[view]["f1_per_seed"] = [s["f1"] for s in scores]
    return out


def noise_for_f1(f1_at: Callable[[float], float], target: float, tol: float = 0.002) -> float | None:
    """Bisection on [0, 1] for the noise whose F1 is `target` (F1 falls with noise)."""
    lo, hi = 0.0, 1.0
    if f1_at(hi) > target:
        return None  # even noise 1 is better than the target
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f1_at(mid) > target else (lo, mid)
    return round((lo + hi) / 2, 3)


def run_dataset(name: str, examples: list[Example], seeds: Sequence[int], kind: str = "random",
                noises: Sequence[float] = NOISES, bisect: Sequence[str] = ("answer", "grounded")) -> dict[str, Any]:
    """Rows at `noises`, and the noise for each target F1 by bisection on the views in `bisect` (the
    other view is measured at the noise found: bisecting on "answer" alone skips most grounding work)."""
    grounder = make_grounder(label_set(examples))
    rows = [evaluate(examples, n, seeds, grounder, kind) for n in noises]
    view = "grounded" if grounder is not None else "answer"
    targets: dict[str, Any] = {}
    for v in [b for b in bisect if b == "answer" or grounder is not None]:
        cache: dict[float, float] = {}

        def f1_at(noise: float, v: str = v, cache: dict[float, float] = cache) -> float:
            if noise not in cache:
                cache[noise] = evaluate(examples, noise, seeds, grounder if v == "grounded" else None, kind)[v]["f1"]
            return cache[noise]

        for tname, target in TARGETS.items():
            found = noise_for_f1(f1_at, target)
            at = None if found is None else evaluate(examples, found, seeds, grounder, kind)
            targets.setdefault(v, {})[tname] = {
                "target_f1": target, "noise": found,
                "measured_f1": None if at is None else at[v]["f1"],
                "per_seed_f1": None if at is None else at[v]["f1_per_seed"],
                # the other view at the same noise (grounded F1 when bisecting on the answer)
                "measured": None if at is None else {k: at[k]["f1"] for k in ("answer", "grounded") if k in at}}
    return {"dataset": name, "kind": kind, "sentences": len(examples),
            "entities": sum(len(ex.spans) for ex in examples),
            "labels": label_set(examples), "rows": rows, "targets": targets, "primary_view": view}


def markdown(results: list[dict[str, Any]], seeds: Sequence[int]) -> str:
    kind = results[0].get("kind", "random") if results else "random"
    lines = [f"Strict micro P/R/F1 of the simulated teacher, {kind} noise (mean of seeds {','.join(map(str, seeds))}).",
             "",
             "| dataset | noise | answer P | answer R | answer F1 | grounded P | grounded R | grounded F1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for row in res["rows"]:
            cells = [res["dataset"], f"{row['noise']:.1f}"]
            for view in ("answer", "grounded"):
                s = row.get(view)
                cells += [f"{s[k]:.3f}" for k in ("precision", "recall", "f1")] if s else ["–"] * 3
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| dataset | teacher | target F1 | noise (answer F1) | noise (grounded F1) |",
              "|---|---|---:|---:|---:|"]
    for res in results:
        for tname, target in TARGETS.items():
            cells = [res["dataset"], tname.replace("_", "-"), f"{target:.2f}"]
            for view in ("answer", "grounded"):
                t = res["targets"].get(view, {}).get(tname)
                cells.append("–" if not t or t["noise"] is None else f"{t['noise']:.3f} (F1 {t['measured_f1']:.3f}"
                             + (f"; seeds {min(t['per_seed_f1']):.3f}–{max(t['per_seed_f1']):.3f}"
                                if t.get("per_seed_f1") else "")
                             + (f"; grounded {t['measured']['grounded']:.3f}" if view == "answer" and "grounded"
                                not in res["targets"] and "grounded" in (t.get("measured") or {}) else "") + ")")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="folder holding bc5cdr/, conll2003/")
    parser.add_argument("--datasets", default="bc5cdr,conll2003")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated noise seeds (scores are their mean)")
    parser.add_argument("--kind", choices=["random", "systematic"], default="random", help="noise model")
    parser.add_argument("--noises", default=",".join(map(str, NOISES)), help="noise levels of the table rows")
    parser.add_argument("--bisect", default="answer,grounded",
                        help="views to bisect on (answer is much cheaper; grounded is still measured at its noise)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    started = time.monotonic()
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        examples = load_split(args.data_root / name / f"{args.split}.jsonl")
        results.append(run_dataset(name, examples, seeds, args.kind,
                                   [float(x) for x in args.noises.split(",") if x.strip()],
                                   [v.strip() for v in args.bisect.split(",") if v.strip()]))
    elapsed = time.monotonic() - started
    print(markdown(results, seeds))
    print(f"\n({elapsed:.1f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "teacher_noise", "simulation": True, "split": args.split,
                                    "kind": args.kind, "seeds": seeds, "seconds": round(elapsed, 1),
                                    "results": results},
                                   indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
