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
from typing import TYPE_CHECKING, Any

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
    # The same 100 gold sentences trained to convergence (a profile's epoch cap is sized for 500 LLM
    # labels; on 100 sentences it stops the supervised baseline after a few dozen steps).
    "gold-only-long": {"strategy": "random", "reweight": False, "gold_only": True,
                       "overrides": {"max_epochs": 20, "patience": 3}},
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

if TYPE_CHECKING:
    from llmaaa.simulate import SimulationConfig


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


def grid_config(dataset: str, teacher: str, variant: str, seed: int, profile: str, out: Path) -> SimulationConfig:
    """One run of the grid; runs that differ only in strategy share round 0 through `.round0-cache`."""
    from llmaaa.simulate import SimulationConfig

    opts = VARIANTS[variant]
    return SimulationConfig(
        data=DATA / dataset, out=out, strategy=opts["strategy"], reweight=opts["reweight"],
        gold_only=bool(opts.get("gold_only")), teacher_noise=TEACHER_NOISE[dataset][teacher],
        gold_size=100, seed=seed, round0_cache=OUT_ROOT / profile / ".round0-cache",
        **{**PROFILES[profile], **opts.get("overrides", {})})


def run_grid(datasets: list[str], teachers: list[str], variants: list[str], seeds: list[int], profile: str) -> None:
    """Run in priority order: dataset, then seed, then teacher, then variant. Start one process per core
    (with LLMAAA_TORCH_THREADS=1) to use a small CPU fully; a killed run leaves `.claimed`: delete it to redo.
    Runs that differ only in strategy share round 0 through `.round0-cache`: run one variant at a time
    (`--variants mnlp`, then `--variants kmeans`, ...) so that the second variant finds it computed."""
    from llmaaa.simulate import run_simulation

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
                    run_simulation(grid_config(dataset, teacher, variant, seed, profile, out))
                    (out / ".claimed").unlink(missing_ok=True)
                    logging.info("%s done in %.0f s", name, time.time() - started)


def load_runs(profile: str) -> list[dict[str, Any]]:
    runs = []
    for path in sorted((OUT_ROOT / profile).glob("*/results.json")):
        dataset, teacher, *variant, seed = path.parent.name.split("-")
        # "teacher_kind" (chatgpt / weak / none) beside the results' own "teacher" (its measured F1).
        runs.append({**json.loads(path.read_text()), "dataset": dataset, "teacher_kind": teacher,
                     "variant": "-".join(variant), "seed": int(seed[1:])})
    return runs


# Paired comparisons (same dataset, teacher and seed, so the same gold, seed set, pool and test sample):
# (name, variant A, variant B, goal in F1 points that A − B should exceed, teachers the goal is set for).
COMPARISONS: list[tuple[str, str, str, float, tuple[str, ...]]] = [
    ("least confidence − random (issue 3)", "lc", "random", 0.0, ("chatgpt", "weak")),
    ("least confidence − random (issue 4)", "lc", "random", 3.0, ("chatgpt", "weak")),
    ("reweighting − no reweighting (least confidence)", "lc", "lc-noreweight", 3.0, ("weak",)),
    ("hybrid − least confidence", "hybrid", "lc", 0.0, ("chatgpt", "weak")),
    ("hybrid − random", "hybrid", "random", 3.0, ("chatgpt", "weak")),
    ("MNLP − random", "mnlp", "random", 0.0, ()),
    ("k-means − random", "kmeans", "random", 0.0, ()),
    ("coreset − random", "coreset", "random", 0.0, ()),
]


# The acquisition strategies compared by issue 4, all with reweighting, in the order the tables show them.
STRATEGY_VARIANTS = ["random", "lc", "mnlp", "kmeans", "coreset", "hybrid"]


def strategy_tables(groups: dict[tuple[str, str, str], list[dict[str, Any]]], budgets: list[int]) -> list[str]:
    """Two side-by-side tables of the strategies per dataset and teacher: F1 at the largest budget, and the
    mean F1 over the curve's budgets (a normalized area under the learning curve). Best per row in bold."""
    import numpy as np

    shown = [v for v in STRATEGY_VARIANTS if any(k[2] == v for k in groups)]
    rows = sorted({(d, t) for d, t, v in groups if v in shown})
    if not shown or not budgets:
        return []

    def final(rs: list[dict[str, Any]]) -> float:
        return float(np.mean([x["f1"] for r in rs for x in r["rounds"] if x["labels"] == budgets[-1]]))

    def curve_mean(rs: list[dict[str, Any]]) -> float:
        return float(np.mean([np.mean([x["f1"] for x in r["rounds"] if x["labels"] in budgets]) for r in rs]))

    out: list[str] = []
    for title, measure in ((f"F1 at {budgets[-1]} LLM labels", final),
                           (f"mean F1 over the budgets {', '.join(map(str, budgets))} (area under the curve)",
                            curve_mean)):
        out += [f"Strategies side by side, with reweighting: {title}; (n) = seeds.", "",
                "| dataset | teacher | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
        for dataset, teacher in rows:
            values = {v: (measure(rs), len(rs)) for v in shown if (rs := groups.get((dataset, teacher, v)))}
            best = max(m for m, _ in values.values())
            cells = [("–" if v not in values else
                      (f"**{values[v][0]:.3f}**" if values[v][0] == best else f"{values[v][0]:.3f}")
                      + f" ({values[v][1]})") for v in shown]
            out.append(f"| {dataset} | {teacher} | " + " | ".join(cells) + " |")
        out.append("")
    return out


WEIGHT_COLUMNS = [("wrong_label_share", "wrong LLM labels"), ("zero_weight_share", "weight 0"),
                  ("mean_relative_weight_correct", "mean weight, correct labels"),
                  ("mean_relative_weight_wrong", "mean weight, wrong labels"),
                  ("auc", "AUC correct > wrong"), ("skipped_batch_share", "all-zero batches")]


def weight_table(runs: list[dict[str, Any]]) -> list[str]:
    """The learned sentence weights against the teacher's known errors, in the last round of every reweighted
    run that recorded them (pooled over strategies): does reweighting find the wrong labels?"""
    import numpy as np

    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["rounds"] and "weights" in r["rounds"][-1]:
            rows[(r["dataset"], r["teacher_kind"])].append(r["rounds"][-1]["weights"])
    if not rows:
        return []
    out = ["Learned sentence weights in the last round (relative: 1 = an average share of its batch), pooled",
           "over the reweighted runs that recorded them; AUC = chance a correct LLM label outweighs a wrong one",
           "(0.5 = no signal about label noise).", "",
           "| dataset | teacher | runs | " + " | ".join(name for _, name in WEIGHT_COLUMNS) + " |",
           "|---|---|---|" + "---|" * len(WEIGHT_COLUMNS)]
    for (dataset, teacher), ws in sorted(rows.items()):
        cells = []
        for key, _ in WEIGHT_COLUMNS:
            values = [w[key] for w in ws if w.get(key) is not None]
            cells.append(f"{np.mean(values):.2f}" if values else "–")
        out.append(f"| {dataset} | {teacher} | {len(ws)} | " + " | ".join(cells) + " |")
    return [*out, ""]


def report(profile: str) -> str:
    """Markdown: F1 by budget per configuration, then the paired comparisons; also writes the PNG curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = load_runs(profile)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["teacher_kind"], r["variant"])].append(r)
    budgets = sorted({x["labels"] for r in runs for x in r["rounds"] if x["labels"]})

    def cell(values: list[float]) -> str:
        if not values:
            return "–"
        return f"{np.mean(values):.3f}" if len(values) == 1 else f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    lines = ["Test entity F1 (mean ± sd over seeds) by number of LLM-labeled sentences; teacher F1 is the",
             "simulated teacher's F1 on the labels it produced in those runs.", "",
             "| dataset | teacher | variant | seeds | teacher F1 | " + " | ".join(f"F1 at {b}" for b in budgets)
             + " |", "|---|---|---|---|---|" + "---|" * len(budgets)]
    for (dataset, teacher, variant), rs in sorted(groups.items()):
        teacher_f1 = [r["teacher"]["f1"] for r in rs if r["teacher"].get("f1") is not None]
        if variant.startswith("gold-only"):
            f1s = " | ".join([f"{cell([r['final']['f1'] for r in rs])} (100 gold, no LLM labels)"]
                             + [""] * (len(budgets) - 1))
        else:
            f1s = " | ".join(cell([x["f1"] for r in rs for x in r["rounds"] if x["labels"] == b]) for b in budgets)
        lines.append(f"| {dataset} | {teacher} | {variant} | {len(rs)} | {cell(teacher_f1)} | {f1s} |")

    lines += ["", *strategy_tables(groups, budgets), *weight_table(runs)]

    by_seed = {(r["dataset"], r["teacher_kind"], r["variant"], r["seed"]): r for r in runs}
    lines += ["", f"Paired differences at {budgets[-1] if budgets else '?'} LLM labels (same dataset, teacher "
              "and seed), in F1 points; 'student − teacher' uses least confidence with reweighting.", "",
              "| dataset | teacher | comparison | seeds | per seed | mean | goal | met |",
              "|---|---|---|---|---|---|---|---|"]
    for dataset, teacher in sorted({(d, t) for d, t, _ in groups if t != "none"}):
        rows: list[tuple[str, list[float], float | None]] = []
        for variant, name, goal in (("lc", "student − teacher", 0.0),
                                    ("lc-noreweight", "student without reweighting − teacher", None)):
            rs = [r for (d, t, v, _), r in sorted(by_seed.items()) if (d, t, v) == (dataset, teacher, variant)]
            rows.append((name, [100 * (r["final"]["f1"] - r["teacher"]["f1"]) for r in rs], goal))
        for name, a, b, goal, goal_teachers in COMPARISONS:
            diffs = [100 * (ra["final"]["f1"] - rb["final"]["f1"])
                     for (d, t, v, seed), ra in sorted(by_seed.items()) if (d, t, v) == (dataset, teacher, a)
                     and (rb := by_seed.get((d, t, b, seed))) is not None]
            rows.append((name, diffs, goal if teacher in goal_teachers else None))
        for name, diffs, goal in rows:
            if not diffs:
                continue
            mean = float(np.mean(diffs))
            target, met = ("–", "–") if goal is None else (f"> {goal:+.0f}", "yes" if mean > goal else "no")
            per_seed = ", ".join(f"{d:+.1f}" for d in diffs)
            lines.append(f"| {dataset} | {teacher} | {name} | {len(diffs)} | {per_seed} | {mean:+.1f} | "
                         f"{target} | {met} |")
    docs = REPO / "docs" / "figures"
    docs.mkdir(parents=True, exist_ok=True)
    for dataset in sorted({r["dataset"] for r in runs}):
        teachers = sorted({r["teacher_kind"] for r in runs if r["dataset"] == dataset and r["teacher_kind"] != "none"})
        if not teachers:
            continue
        fig, axes = plt.subplots(1, len(teachers), figsize=(8 * len(teachers), 4.5), squeeze=False)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, teacher in zip(axes[0], teachers, strict=True):
            for (d, t, variant), rs in sorted(groups.items()):
                if d != dataset or t != teacher or variant.startswith("gold-only"):
                    continue
                xs = [r["labels"] for r in rs[0]["rounds"]]
                curves = np.array([[r2["f1"] for r2 in r["rounds"]] for r in rs])
                ys, sd = curves.mean(axis=0), curves.std(axis=0)
                color = colors[list(VARIANTS).index(variant) % len(colors)]  # the same colour in every panel
                dashed = "--" if variant == "lc-noreweight" else "-"
                ax.plot(xs, ys, marker="o", color=color, linestyle=dashed, label=f"{variant} (seeds={len(rs)})")
                ax.fill_between(xs, ys - sd, ys + sd, color=color, alpha=0.10)
            tf = [r["teacher"]["f1"] for (d, t, _), rs in groups.items() if d == dataset and t == teacher
                  for r in rs]
            ax.axhline(float(np.mean(tf)), color="grey", linestyle="--", label="simulated teacher")
            for variant, style, label in (("gold-only", ":", "100 gold only (same epoch cap)"),
                                          ("gold-only-long", "-.", "100 gold only (to convergence)")):
                gold = groups.get((dataset, "none", variant))
                if gold:
                    ax.axhline(float(np.mean([r["final"]["f1"] for r in gold])), color="black", linestyle=style,
                               label=label)
            ax.set_title(f"{dataset}, {teacher} teacher")
            ax.set_xlabel("LLM-labeled sentences")
            ax.set_ylabel("test entity F1")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
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
    text = report(args.profile)
    (OUT_ROOT / args.profile / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
