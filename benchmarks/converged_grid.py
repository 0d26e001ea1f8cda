"""The converged grid of issue 14: recipe vs plain vs L2RW, random vs systematic teacher noise, to 2,000 labels.

    LLMAAA_TORCH_THREADS=1 .venv/bin/python -m benchmarks.converged_grid            # run (resumable)
    .venv/bin/python -m benchmarks.converged_grid --report                          # tables + PNG curves

Cells: datasets BC5CDR and CoNLL03 × teachers ChatGPT-like (≈0.70 F1) and weak (≈0.35 F1) × noise
random and systematic (`llmaaa.simulation.noise`, calibrated on the train splits) × training recipes
"recipe", "plain" and "l2rw" (`training.trainer.RECIPES`, each trained until its early stopping) × seeds.
Every run: 100 verified sentences, a random seed set of 100 LLM labels, then least confidence to 300, 500,
1,000 and 2,000 LLM labels; a 1,000-sentence test sample. The seed fixes the verified set, the pool and
test samples, the teacher's noise and the training order, so runs of one seed differ only in what a
cell says (paired differences compare like with like).

Runs go in priority order (seed, noise kind (systematic first), dataset, teacher, recipe), in blocks of
(seed, noise, dataset) whose runs all reach 500 labels before any goes on to 2,000, and are written
to `benchmarks/results/converged/<profile>/<dataset>-<teacher>-<noise>-<recipe>-s<seed>/`. Resumable twice
over: a finished run (`results.json`) is skipped, and an interrupted one continues from its last finished
round (`progress.json`). A run is claimed by one process (`.claimed` holds its pid; a dead owner's claim
is taken over), so one process per core can share the list.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._common import DATA, REPO, RESULTS, claim_run

if TYPE_CHECKING:
    from llmaaa.simulate import SimulationConfig

DATASETS = ["bc5cdr", "conll2003"]
TEACHERS = ["chatgpt", "weak"]  # ≈0.70 and ≈0.35 F1 (llmaaa.simulation.noise.CALIBRATION_TARGETS)
NOISE_KINDS = ["systematic", "random"]  # systematic first: it is what reweighting is for
RECIPES = ["recipe", "plain", "l2rw"]
SEEDS = [1, 2, 3]
DEFAULT_RECIPE = "recipe"  # the student the goals are about
PROFILES: dict[str, dict[str, Any]] = {
    # The grid: 500 is the paper's budget, 2,000 where LLM labels (the cheap resource) flatten.
    "converged": {"budgets": [100, 300, 500, 1000, 2000], "pool_size": 4500, "test_size": 1000,
                  "train_options": {}},
    # A few minutes end to end: checks the harness, not the method.
    "smoke": {"budgets": [20, 40], "pool_size": 200, "test_size": 100,
              "train_options": {"max_epochs": 1}},
}
OUT_ROOT = RESULTS / "converged"
GOALS = [
    # (description, recipe A, recipe B or "teacher", teacher, noise kinds, budget, threshold in F1 points)
    ("default student ≥ teacher + 5 (ChatGPT-like, both noise kinds, 2,000 labels)", DEFAULT_RECIPE, "teacher",
     "chatgpt", ("random", "systematic"), 2000, 5.0),
    ("recipe ≥ plain − 0.5 (ChatGPT-like)", "recipe", "plain", "chatgpt", ("random", "systematic"), 2000, -0.5),
    ("recipe ≥ plain + 3 (weak, systematic)", "recipe", "plain", "weak", ("systematic",), 2000, 3.0),
]


def run_name(dataset: str, teacher: str, kind: str, recipe: str, seed: int) -> str:
    return f"{dataset}-{teacher}-{kind}-{recipe}-s{seed}"


# A block of runs (one seed, noise kind and dataset) first goes to this many labels in every run, then to the end.
FIRST_STAGE = 500


def run_order(datasets: list[str], teachers: list[str], kinds: list[str], recipes: list[str],
              seeds: list[int]) -> list[tuple[str, str, str, str, int]]:
    """Most informative first: one seed of every cell before the next seed, systematic noise first."""
    return [(d, t, k, r, s) for s in seeds for k in kinds for d in datasets for t in teachers for r in recipes]


def staged_order(datasets: list[str], teachers: list[str], kinds: list[str], recipes: list[str], seeds: list[int],
                 first_stage: int | None) -> list[tuple[tuple[str, str, str, str, int], int | None]]:
    """`run_order` in blocks of (seed, noise, dataset); each block's runs stop at `first_stage` labels before
    any of them goes on (None = to the end): the paper's budget in every cell of a block comes first."""
    order = run_order(datasets, teachers, kinds, recipes, seeds)
    if first_stage is None:
        return [(run, None) for run in order]
    blocks: dict[tuple[int, str, str], list[tuple[str, str, str, str, int]]] = {}
    for run in order:
        blocks.setdefault((run[4], run[2], run[0]), []).append(run)
    return [(run, stop) for runs in blocks.values() for stop in (first_stage, None) for run in runs]


def stage_done(out: Path, stop_at: int | None) -> bool:
    if (out / "results.json").exists():
        return True
    if stop_at is None or not (out / "progress.json").exists():
        return False
    rounds = json.loads((out / "progress.json").read_text())["rounds"]
    return bool(rounds) and rounds[-1]["labels"] >= stop_at


claim = claim_run  # the shared claim (benchmarks._common): finished, live-claimed or taken over


def record_code(out: Path) -> None:
    """Append the commit (and whether the code the run imports had local changes) to `code.jsonl`: the
    trainer changes under an unfinished grid, and a resumed run may span commits."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "training", "acquisition", "llmaaa", "backend")
    with (out / "code.jsonl").open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "commit": git("rev-parse", "HEAD"),
                            "dirty": [line[3:] for line in dirty.splitlines()]}) + "\n")


def stale(run: dict[str, Any]) -> bool:
    """A finished run trained with another configuration than its recipe resolves to today."""
    from dataclasses import asdict

    from training.trainer import TrainConfig

    recorded = run.get("train_config")
    if not recorded:
        return False
    try:
        now = asdict(TrainConfig.from_recipe(run["recipe"], seed=recorded.get("seed", run["seed"])))
    except (ValueError, TypeError):
        return True
    return {k: v for k, v in now.items() if k in recorded} != recorded or set(now) != set(recorded)


def grid_config(dataset: str, teacher: str, kind: str, recipe: str, seed: int, profile: str,
                out: Path, stop_at: int | None = None) -> SimulationConfig:
    from llmaaa.simulate import SimulationConfig
    from llmaaa.simulation.noise import calibrated_noise

    p = PROFILES[profile]
    return SimulationConfig(
        data=DATA / dataset, out=out, strategy="least_confidence", gold_size=100, seed=seed,
        teacher_kind=kind, teacher_noise=calibrated_noise(kind, dataset, teacher), recipe=recipe,
        train_options=dict(p["train_options"]), budgets=list(p["budgets"]), pool_size=p["pool_size"],
        test_size=p["test_size"], resume=True, stop_at=stop_at)


def run_grid(datasets: list[str], teachers: list[str], kinds: list[str], recipes: list[str], seeds: list[int],
             profile: str, limit: int | None = None, first_stage: int | None = FIRST_STAGE) -> int:
    """Run every unclaimed, unfinished stage in order (at most `limit`); returns how many ran."""
    from llmaaa.simulate import run_simulation

    done = 0
    budgets = PROFILES[profile]["budgets"]
    stage = first_stage if first_stage is not None and budgets[0] <= first_stage < budgets[-1] else None
    for (dataset, teacher, kind, recipe, seed), stop_at in staged_order(datasets, teachers, kinds, recipes, seeds,
                                                                       stage):
        if limit is not None and done >= limit:
            break
        name = run_name(dataset, teacher, kind, recipe, seed)
        out = OUT_ROOT / profile / name
        if stage_done(out, stop_at) or not claim(out):
            continue
        started = time.time()
        record_code(out)
        logging.info("running %s%s", name, f" to {stop_at} labels" if stop_at else "")
        try:
            run_simulation(grid_config(dataset, teacher, kind, recipe, seed, profile, out, stop_at))
        finally:
            (out / ".claimed").unlink(missing_ok=True)
        logging.info("%s done in %.0f s", name, time.time() - started)
        done += 1
    return done


def load_runs(profile: str) -> list[dict[str, Any]]:
    """Finished runs (`results.json`) and, marked `complete: False`, the finished rounds of unfinished ones."""
    runs = []
    for folder in sorted(p for p in (OUT_ROOT / profile).glob("*-s*") if p.is_dir()):
        dataset, teacher, kind, recipe, seed = folder.name.split("-")
        meta = {"dataset": dataset, "teacher_kind": teacher, "noise": kind, "recipe": recipe, "seed": int(seed[1:])}
        if (folder / "results.json").exists():
            runs.append({**json.loads((folder / "results.json").read_text()), **meta, "complete": True})
        elif (folder / "progress.json").exists():
            rounds = json.loads((folder / "progress.json").read_text())["rounds"]
            runs.append({"rounds": rounds, "teacher": {}, **meta, "complete": False})
    return runs


def at_budget(run: dict[str, Any], budget: int, key: str = "f1") -> float | None:
    for r in run["rounds"]:
        if r["labels"] == budget and r.get(key) is not None:
            return float(r[key])
    return None


def _fmt(values: list[float], points: bool = False) -> str:
    import numpy as np

    if not values:
        return "–"
    scale = 100 if points else 1
    mean = float(np.mean(values)) * scale
    text = f"{mean:+.1f}" if points else f"{mean:.3f}"
    if len(values) > 1:
        text += f" ± {float(np.std(values)) * scale:.1f}" if points else f" ± {float(np.std(values)):.3f}"
    return f"{text} ({len(values)})"


def report(profile: str, figures: Path | None = None) -> str:
    """Markdown tables (F1 at 500 and 2,000, paired differences, the issue's goals) and PNG curves."""
    import numpy as np

    runs = load_runs(profile)
    budgets = PROFILES[profile]["budgets"]
    key_budgets = [b for b in (500, 2000) if b in budgets] or budgets[-1:]
    by = {(r["dataset"], r["teacher_kind"], r["noise"], r["recipe"], r["seed"]): r for r in runs}
    cells = sorted({k[:4] for k in by})
    stale_runs = [f"{r['dataset']}-{r['teacher_kind']}-{r['noise']}-{r['recipe']}-s{r['seed']}" for r in runs
                  if r["complete"] and stale(r)]
    lines = [f"Converged grid, profile `{profile}`: {sum(r['complete'] for r in runs)} finished runs, "
             f"{sum(not r['complete'] for r in runs)} in progress (their finished rounds are counted).",
             *([f"**Stale** (trained with another configuration than the recipe's today; delete to rerun): "
                f"{', '.join(stale_runs)}."] if stale_runs else []),
             "Test entity F1, mean ± sd over seeds (n seeds); teacher F1 = the simulated teacher's strict F1 on the",
             "LLM labels the student trained on at that budget.", "",
             "| dataset | teacher | noise | recipe | " + " | ".join(
                 f"teacher F1 at {b} | F1 at {b}" for b in key_budgets) + " | curve (labels: mean F1) | best epochs |",
             "|---|---|---|---|" + "---|---|" * len(key_budgets) + "---|---|"]
    for cell in cells:
        rs = [r for k, r in by.items() if k[:4] == cell]
        parts = []
        for b in key_budgets:
            parts += [_fmt([v for r in rs if (v := at_budget(r, b, "teacher_f1")) is not None]),
                      _fmt([v for r in rs if (v := at_budget(r, b)) is not None])]
        epochs = [x.get("best_epoch") for r in rs for x in r["rounds"] if x.get("best_epoch") is not None]
        curve = " ".join(f"{b}: {np.mean(vs):.3f}" for b in budgets
                         if (vs := [v for r in rs if (v := at_budget(r, b)) is not None]))
        lines.append("| " + " | ".join([*cell, *parts, curve or "–", ",".join(map(str, epochs[:10])) or "–"]) + " |")

    def diffs(d: str, t: str, k: str, a: str, b: str, budget: int) -> list[float]:
        out = []
        for (d2, t2, k2, r2, seed), ra in by.items():
            if (d2, t2, k2, r2) != (d, t, k, a) or (fa := at_budget(ra, budget)) is None:
                continue
            if b == "teacher":
                fb = at_budget(ra, budget, "teacher_f1")
            else:
                fb = at_budget(rb, budget) if (rb := by.get((d, t, k, b, seed))) else None
            if fb is not None:
                out.append(fa - fb)
        return out

    pairs = [("recipe", "plain"), ("l2rw", "plain"), ("recipe", "l2rw"), (DEFAULT_RECIPE, "teacher"),
             ("plain", "teacher")]
    if any(r["recipe"] == "plain_gold" for r in runs):  # `--recipes plain_gold`: is it the gold term or the weights?
        pairs.append(("recipe", "plain_gold"))
    lines += ["", "Paired differences in F1 points (same dataset, teacher, noise and seed), mean ± sd (n seeds):", "",
              "| dataset | teacher | noise | " + " | ".join(f"{a} − {b} at {bud}" for a, b in pairs
                                                            for bud in key_budgets) + " |",
              "|---|---|---|" + "---|" * (len(pairs) * len(key_budgets))]
    for d, t, k in sorted({c[:3] for c in cells}):
        vals = [_fmt(diffs(d, t, k, a, b, bud), points=True) for a, b in pairs for bud in key_budgets]
        lines.append(f"| {d} | {t} | {k} | " + " | ".join(vals) + " |")

    lines += ["", "The issue's goals (mean over seeds of the paired difference; 'at 500' is reported, the goal is "
              "judged at 2,000):", "", "| goal | dataset | noise | at 500 | at 2,000 | met |",
              "|---|---|---|---|---|---|"]
    for desc, a, b, teacher, kinds, budget, threshold in GOALS:
        for d in DATASETS:
            for k in kinds:
                at = {bud: diffs(d, teacher, k, a, b, bud) for bud in (500, budget)}
                final = at[budget]
                met = "–" if not final else ("yes" if float(np.mean(final)) * 100 >= threshold - 1e-9 else "no")
                if final and len(final) < len(SEEDS):
                    met += f" (so far, {len(final)} seed{'s' if len(final) > 1 else ''})"
                lines.append(f"| {desc} | {d} | {k} | {_fmt(at[500], True)} | {_fmt(final, True)} | {met} |")
    lines += ["", *cost_lines(runs, budgets)]
    _plot(runs, profile, figures or REPO / "docs" / "figures")
    return "\n".join(lines)


def cost_lines(runs: list[dict[str, Any]], budgets: list[int]) -> list[str]:
    """The grid's cost extrapolated from the rounds measured so far: CPU seconds (training and the test
    evaluation; wall-clock training seconds for rounds that lack them) per LLM label, median over rounds,
    × the labels every run trains on (the sum of its budgets), per recipe. Runs are single-threaded, so
    CPU hours are core hours; rounds with more labels may stop at another epoch, so this is a first guess."""
    import numpy as np

    per_recipe: dict[str, list[float]] = {}
    for r in runs:
        for x in r["rounds"]:
            seconds = x.get("cpu_seconds") or x.get("train_seconds")
            if seconds and x.get("labels"):
                per_recipe.setdefault(r["recipe"], []).append(float(seconds) / x["labels"])
    if not per_recipe:
        return []
    n_runs = len(DATASETS) * len(TEACHERS) * len(NOISE_KINDS) * len(SEEDS)  # runs per recipe
    out = ["Cost so far, extrapolated: CPU seconds per LLM label (median over measured rounds) × "
           f"{sum(budgets):,} labels trained per run (budgets {', '.join(map(str, budgets))}), "
           f"× {n_runs} runs per recipe.", "",
           "| recipe | rounds measured | s per label | hours per run | CPU hours, all runs |", "|---|---|---|---|---|"]
    total = 0.0
    for recipe in [*[r for r in RECIPES if r in per_recipe], *sorted(set(per_recipe) - set(RECIPES))]:
        spl = float(np.median(per_recipe[recipe]))
        hours = spl * sum(budgets) / 3600
        total += hours * n_runs
        out.append(f"| {recipe} | {len(per_recipe[recipe])} | {spl:.2f} | {hours:.1f} | {hours * n_runs:.0f} |")
    out.append(f"| all measured recipes | | | | {total:.0f} |")
    return out


def _plot(runs: list[dict[str, Any]], profile: str, figures: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figures.mkdir(parents=True, exist_ok=True)
    colors = {"recipe": "tab:green", "plain": "tab:blue", "l2rw": "tab:red", "plain_gold": "tab:purple"}
    for dataset in sorted({r["dataset"] for r in runs}):
        fig, axes = plt.subplots(len(TEACHERS), len(NOISE_KINDS), figsize=(11, 8), squeeze=False, sharex=True)
        for row, teacher in enumerate(TEACHERS):
            for col, kind in enumerate(NOISE_KINDS):
                ax = axes[row][col]
                teacher_f1: dict[int, list[float]] = {}
                for recipe in [*RECIPES, *sorted({r["recipe"] for r in runs} - set(RECIPES))]:
                    rs = [r for r in runs if (r["dataset"], r["teacher_kind"], r["noise"], r["recipe"])
                          == (dataset, teacher, kind, recipe)]
                    if not rs:
                        continue
                    xs = sorted({x["labels"] for r in rs for x in r["rounds"]})
                    ys = [[v for r in rs if (v := at_budget(r, b)) is not None] for b in xs]
                    ax.plot(xs, [np.mean(y) for y in ys], marker="o", color=colors.get(recipe),
                            label=f"{recipe} (seeds={len(rs)})")
                    ax.fill_between(xs, [np.mean(y) - np.std(y) for y in ys], [np.mean(y) + np.std(y) for y in ys],
                                    color=colors.get(recipe), alpha=0.1)
                    for r in rs:
                        for x in r["rounds"]:
                            if x.get("teacher_f1") is not None:
                                teacher_f1.setdefault(x["labels"], []).append(x["teacher_f1"])
                if teacher_f1:  # the teacher's F1 on the labels trained on: it changes as acquisition goes on
                    xs = sorted(teacher_f1)
                    ax.plot(xs, [np.mean(teacher_f1[b]) for b in xs], color="grey", linestyle="--", marker=".",
                            label="simulated teacher (on those labels)")
                ax.set_xscale("log")
                ax.set_title(f"{dataset}: {teacher} teacher, {kind} noise", fontsize=10)
                ax.set_xlabel("LLM-labeled sentences")
                ax.set_ylabel("test entity F1")
                ax.grid(alpha=0.3)
                if ax.lines:
                    ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(figures / f"converged-{profile}-{dataset}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--teachers", nargs="+", default=TEACHERS, choices=TEACHERS)
    ap.add_argument("--noise", nargs="+", default=NOISE_KINDS, choices=NOISE_KINDS)
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="converged")
    ap.add_argument("--limit", type=int, help="stop after this many runs (or stages)")
    ap.add_argument("--first-stage", type=int, default=FIRST_STAGE,
                    help="labels every run of a block reaches before any goes further (0: no stages)")
    ap.add_argument("--report", action="store_true", help="only aggregate what has run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.report:
        run_grid(args.datasets, args.teachers, args.noise, args.recipes, args.seeds, args.profile, args.limit,
                 args.first_stage or None)
    text = report(args.profile)
    (OUT_ROOT / args.profile).mkdir(parents=True, exist_ok=True)
    (OUT_ROOT / args.profile / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
