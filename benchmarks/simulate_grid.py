"""The LLMaAA learning-curve grid (issues 3 and 4), resumable: each finished run is kept and skipped later.

    .venv/bin/python -m benchmarks.simulate_grid [--datasets bc5cdr conll2003] [--seeds 1 2] [--profile quick|paper]
    .venv/bin/python -m benchmarks.simulate_grid --report      # tables + PNG curves into docs/

Runs `llmaaa simulate` configurations one after another and writes each to
`benchmarks/results/simulate/<profile>/<dataset>-<teacher>-<variant>-s<seed>/results.json`.
Teachers: "chatgpt" (noise measured to give ≈0.70 F1) and "weak" (≈0.35 F1), see docs/simulated-llm.md.
Variants: random / least confidence with reweighting, least confidence without reweighting, the other
acquisition strategies, and training on the 100 gold sentences alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks._common import DATA, REPO, RESULTS

# Measured in docs/simulated-llm.md (grounded F1 on the full dev split): noise for ≈0.70 and ≈0.35 F1.
TEACHER_NOISE = {"bc5cdr": {"chatgpt": 0.298, "weak": 0.772}, "conll2003": {"chatgpt": 0.294, "weak": 0.761}}
VARIANTS: dict[str, dict[str, Any]] = {
    "random": {"strategy": "random", "reweight": True},
    "lc": {"strategy": "least_confidence", "reweight": True},
    "lc-noreweight": {"strategy": "least_confidence", "reweight": False},
    "mnlp": {"strategy": "mnlp", "reweight": True},
    "kmeans": {"strategy": "kmeans", "reweight": True},
    "coreset": {"strategy": "coreset", "reweight": True},
    "hybrid": {"strategy": "hybrid", "reweight": True},
    "gold-only": {"strategy": "random", "reweight": False, "gold_only": True},
}
# "paper": the paper's budget (seed 50 + 9 rounds of 50 = 500 LLM labels). "quick": the same budget in
# 100-sentence rounds, fewer epochs and subsampled pool/test, so a CPU box gets through the grid.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"seed_size": 50, "round_size": 50, "rounds": 9, "max_epochs": 20, "patience": 3,
              "pool_size": None, "test_size": None},
    "quick": {"seed_size": 100, "round_size": 100, "rounds": 4, "max_epochs": 6, "patience": 2,
              "pool_size": 2000, "test_size": 1000},
    # "cpu": what a 2-core box finishes for the whole grid in about two hours: the curve at 100, 300 and
    # 500 LLM labels, at most 5 epochs, a 1,500-sentence pool and a 500-sentence test sample.
    "cpu": {"seed_size": 100, "round_size": 200, "rounds": 2, "max_epochs": 5, "patience": 2,
            "pool_size": 1500, "test_size": 500},
}
OUT_ROOT = RESULTS / "simulate"


def claim(out: Path) -> bool:
    """Claim a run for this process (several grid processes can share the list); False if taken or done."""
    if (out / "results.json").exists():
        return False
    out.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(out / ".claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def run_grid(datasets: list[str], teachers: list[str], variants: list[str], seeds: list[int], profile: str) -> None:
    """Run in priority order: dataset, then seed, then teacher, then variant. Start one process per core
    (with LLMAAA_TORCH_THREADS=1) to use a small CPU fully; a killed run leaves `.claimed`: delete it to redo."""
    from llmaaa.simulate import SimulationConfig, run_simulation

    prof = PROFILES[profile]
    for dataset in datasets:
        for seed in seeds:
            for teacher in teachers:
                for variant in variants:
                    opts = VARIANTS[variant]
                    if opts.get("gold_only") and teacher != teachers[0]:
                        continue  # the gold-only baseline has no teacher: run it once
                    name = f"{dataset}-{'none' if opts.get('gold_only') else teacher}-{variant}-s{seed}"
                    out = OUT_ROOT / profile / name
                    if not claim(out):
                        continue
                    started = time.time()
                    logging.info("running %s", name)
                    run_simulation(SimulationConfig(
                        data=DATA / dataset, out=out, strategy=opts["strategy"], reweight=opts["reweight"],
                        gold_only=bool(opts.get("gold_only")), teacher_noise=TEACHER_NOISE[dataset][teacher],
                        gold_size=100, seed=seed, **prof))
                    (out / ".claimed").unlink(missing_ok=True)
                    logging.info("%s done in %.0f s", name, time.time() - started)


def load_runs(profile: str) -> list[dict[str, Any]]:
    runs = []
    for path in sorted((OUT_ROOT / profile).glob("*/results.json")):
        dataset, teacher, *variant, seed = path.parent.name.split("-")
        runs.append({"dataset": dataset, "teacher": teacher, "variant": "-".join(variant),
                     "seed": int(seed[1:]), **json.loads(path.read_text())})
    return runs


def report(profile: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = load_runs(profile)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["teacher"], r["variant"])].append(r)
    lines = ["| dataset | teacher | variant | seeds | teacher F1 | student F1 at {labels} (mean ± sd) |",
             "|---|---|---|---|---|---|"]
    for (dataset, teacher, variant), rs in sorted(groups.items()):
        f1 = np.array([r["final"]["f1"] for r in rs])
        t = [r["teacher"]["f1"] for r in rs if r["teacher"].get("f1") is not None]
        labels = rs[0]["rounds"][-1]["labels"]
        lines.append(f"| {dataset} | {teacher} | {variant} | {len(rs)} | "
                     f"{np.mean(t):.3f} | {f1.mean():.3f} ± {f1.std():.3f} at {labels} |" if t else
                     f"| {dataset} | {teacher} | {variant} | {len(rs)} | – | {f1.mean():.3f} ± {f1.std():.3f} "
                     f"(100 gold) |")
    docs = REPO / "docs" / "figures"
    docs.mkdir(parents=True, exist_ok=True)
    for dataset in sorted({r["dataset"] for r in runs}):
        teachers = sorted({r["teacher"] for r in runs if r["dataset"] == dataset and r["teacher"] != "none"})
        if not teachers:
            continue
        fig, axes = plt.subplots(1, len(teachers), figsize=(6 * len(teachers), 4), squeeze=False)
        for ax, teacher in zip(axes[0], teachers, strict=True):
            for (d, t, variant), rs in sorted(groups.items()):
                if d != dataset or t != teacher:
                    continue
                xs = [r["labels"] for r in rs[0]["rounds"]]
                ys = np.mean([[r2["f1"] for r2 in r["rounds"]] for r in rs], axis=0)
                ax.plot(xs, ys, marker="o", label=f"{variant} (n={len(rs)})")
            tf = [r["teacher"]["f1"] for (d, t, _), rs in groups.items() if d == dataset and t == teacher
                  for r in rs]
            ax.axhline(float(np.mean(tf)), color="grey", linestyle="--", label="simulated teacher")
            gold = groups.get((dataset, "none", "gold-only"))
            if gold:
                ax.axhline(float(np.mean([r["final"]["f1"] for r in gold])), color="black", linestyle=":",
                           label="100 gold only")
            ax.set_title(f"{dataset}, {teacher} teacher")
            ax.set_xlabel("LLM-labeled sentences")
            ax.set_ylabel("test entity F1")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(docs / f"learning-curves-{profile}-{dataset}.png", dpi=110)
        plt.close(fig)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["bc5cdr", "conll2003"])
    ap.add_argument("--teachers", nargs="+", default=["chatgpt", "weak"])
    ap.add_argument("--variants", nargs="+", default=["random", "lc", "lc-noreweight", "gold-only"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--report", action="store_true", help="only aggregate what has run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.report:
        run_grid(args.datasets, args.teachers, args.variants, args.seeds, args.profile)
    print(report(args.profile))


if __name__ == "__main__":
    main()
