"""Effort curves (issue 15): test F1 against the words a reviewer reads and the LLM tokens spent.

    # run (resumable; start one process per core, each with LLMAAA_TORCH_THREADS=1)
    LLMAAA_TORCH_THREADS=1 .venv/bin/python -m benchmarks.effort_grid --profile cpu
    # tables (benchmarks/results/effort/<profile>/report.md) and curves (docs/figures/effort-<profile>-*.png)
    .venv/bin/python -m benchmarks.effort_grid --profile cpu --report

Every run is one `llmaaa simulate --budget-unit words`: 100 verified sentences, a random seed set of
`seed_size` sentences (the same for every strategy at a seed, so round 0 is shared through
`.round0-cache`; BALD trains its own, it needs the model for its MC-dropout passes), then `rounds`
acquisition rounds that each buy W words, W = the words `round_sentences` random pool sentences hold
on average. So every strategy gets the same words to review: the nominal budgets are the seed set's
words + r·W, which with the `cpu` profile are the words of 100, 300 and 500 random sentences. Each
round's batch is filled greedily within its W words (acquisition.cost.select_within_budget), so the
words used stay at most the nominal budget.

Strategies: random, least confidence, MNLP, BALD (MC dropout on the head), density_hybrid. Cells:
datasets × teachers (ChatGPT-like ≈0.70 F1, weak ≈0.35) × noise kinds (random, systematic) × seeds.
The report gives F1 at each nominal budget, the words and LLM tokens actually used, and the area
under the F1-vs-words curve (trapezoids over the nominal budgets, divided by their span: a mean F1).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._common import DATA, REPO, RESULTS, claim_run

if TYPE_CHECKING:
    from llmaaa.simulate import SimulationConfig

STRATEGIES: dict[str, str] = {"random": "random", "lc": "least_confidence", "mnlp": "mnlp", "bald": "bald",
                              "density": "density_hybrid"}
DATASETS = ["bc5cdr", "conll2003"]
TEACHERS = ["chatgpt", "weak"]
NOISE_KINDS = ["random", "systematic"]
SEEDS = [1, 2, 3]
# Measured in docs/simulated-llm.md for random noise (used when llmaaa.simulation.noise has no calibration).
RANDOM_NOISE = {"bc5cdr": {"chatgpt": 0.298, "weak": 0.772}, "conll2003": {"chatgpt": 0.294, "weak": 0.761}}
PROFILES: dict[str, dict[str, Any]] = {
    # The sentence grid's `cpu` profile (docs/simulation-results.md) with word budgets: 100 / 300 / 500
    # random sentences' worth of words, a 1,500-sentence pool, a 500-sentence test sample, <= 5 epochs.
    "cpu": {"seed_size": 100, "round_sentences": 200, "rounds": 2, "gold_size": 100, "pool_size": 1500,
            "test_size": 500, "max_epochs": 5, "patience": 2},
    # As `cpu`, but plain training (no reweighting) for up to 10 epochs, patience 2, F1 early stopping: the
    # strategies are compared on what they select, not on L2RW, which cost 2.5-7.4 F1 in the sentence grid
    # (docs/simulation-results.md) and twice the CPU per step; 5 epochs left most rounds on their last epoch.
    "cpu-plain": {"seed_size": 100, "round_sentences": 200, "rounds": 2, "gold_size": 100, "pool_size": 1500,
                  "test_size": 500, "max_epochs": 10, "patience": 2, "recipe": "plain"},
    # Seconds per run with a tiny encoder, minutes with MiniLM: checks the harness, not the method.
    "smoke": {"seed_size": 10, "round_sentences": 10, "rounds": 1, "gold_size": 10, "pool_size": 60,
              "test_size": 30, "max_epochs": 1, "patience": 1},
}
OUT_ROOT = RESULTS / "effort"


def run_name(dataset: str, teacher: str, kind: str, strategy: str, seed: int) -> str:
    return f"{dataset}-{teacher}-{kind}-{strategy}-s{seed}"


def teacher_noise(kind: str, dataset: str, teacher: str) -> float:
    try:
        from llmaaa.simulation.noise import calibrated_noise
    except ImportError:
        calibrated_noise = None
    if calibrated_noise is not None:
        try:
            return float(calibrated_noise(kind, dataset, teacher))
        except ValueError:
            pass
    if kind != "random":
        raise ValueError(f"no calibrated {kind} noise for {dataset}/{teacher} in llmaaa.simulation.noise")
    return RANDOM_NOISE[dataset][teacher]


def round_words(data: Path, pool_size: int | None, seed: int, sentences: int) -> int:
    """W: the words `sentences` random sentences of the run's pool hold on average (its mean × sentences)."""
    from acquisition.cost import WordCost
    from training.data import load_split, sample

    pool = sample(load_split(data / "train.jsonl"), pool_size, seed)
    return max(1, round(float(WordCost().costs(pool).mean()) * sentences))


def grid_config(dataset: str, teacher: str, kind: str, strategy: str, seed: int, profile: str, out: Path,
                data_root: Path = DATA, recipe: str | None = None, encoder: str | None = None,
                round0_cache: Path | None = None) -> SimulationConfig:
    from llmaaa.simulate import SimulationConfig

    p = PROFILES[profile]
    data = data_root / dataset
    extra: dict[str, Any] = {}
    if kind != "random":
        extra["teacher_kind"] = kind  # only set when needed: older SimulationConfigs lack the field
    return SimulationConfig(
        data=data, out=out, strategy=STRATEGIES[strategy], seed_size=p["seed_size"],
        round_size=round_words(data, p["pool_size"], seed, p["round_sentences"]), rounds=p["rounds"],
        gold_size=p["gold_size"], teacher_noise=teacher_noise(kind, dataset, teacher), pool_size=p["pool_size"],
        test_size=p["test_size"], seed=seed, max_epochs=None if recipe else p["max_epochs"],
        patience=None if recipe else p["patience"], recipe=recipe or p.get("recipe"), encoder=encoder,
        round0_cache=round0_cache if round0_cache is not None else OUT_ROOT / profile / ".round0-cache",
        budget_unit="words", resume=True, **extra)  # a run cut short continues from its last round


claim = claim_run  # the shared claim (benchmarks._common): a dead process's claim is taken over


def run_grid(datasets: Sequence[str], teachers: Sequence[str], kinds: Sequence[str], strategies: Sequence[str],
             seeds: Sequence[int], profile: str, out_root: Path = OUT_ROOT, **config: Any) -> list[Path]:
    """Runs in priority order (seed, dataset, noise kind, teacher, strategy); returns the folders it ran.

    A killed run's claim is taken over by the next grid, which resumes it from its last finished round."""
    from llmaaa.simulate import run_simulation

    done = []
    for seed in seeds:
        for dataset in datasets:
            for kind in kinds:
                for teacher in teachers:
                    for strategy in strategies:
                        out = out_root / profile / run_name(dataset, teacher, kind, strategy, seed)
                        if not claim(out):
                            continue
                        started = time.time()
                        logging.info("running %s", out.name)
                        run_simulation(grid_config(dataset, teacher, kind, strategy, seed, profile, out,
                                                   round0_cache=out_root / profile / ".round0-cache", **config))
                        (out / ".claimed").unlink(missing_ok=True)
                        logging.info("%s done in %.0f s", out.name, time.time() - started)
                        done.append(out)
    return done


# ------------------------------------------------------------------------------------------------- report
def load_runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(root.glob("*/results.json")):
        dataset, teacher, kind, strategy, seed = path.parent.name.split("-")
        res = json.loads(path.read_text())
        runs.append({**res, "dataset": dataset, "teacher_name": teacher, "noise": kind, "strategy": strategy,
                     "seed": int(seed[1:])})
    return runs


def nominal_budgets(run: dict[str, Any]) -> list[int]:
    """The word budget after each round: the seed set's words, then + W per round (the same for every strategy)."""
    first = int(run["rounds"][0]["words"])
    w = int(run["config"]["round_size"])
    return [first + r * w for r in range(len(run["rounds"]))]


def area_under_curve(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoid area over xs divided by the span: the curve's mean height (a single point: that point)."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("xs and ys must be non-empty and the same length")
    if len(xs) == 1 or xs[-1] == xs[0]:
        return float(ys[-1])
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))
    return float(area / (xs[-1] - xs[0]))


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def summarise(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Per (dataset, teacher, noise, strategy): F1 / words / tokens per round over seeds, AUC per seed."""
    cells: dict[tuple[str, str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"seeds": [], "f1": defaultdict(list), "words": defaultdict(list), "tokens": defaultdict(list),
                 "sentences": defaultdict(list), "auc": {}, "budgets": None, "train": None})
    for run in runs:
        cell = cells[(run["dataset"], run["teacher_name"], run["noise"], run["strategy"])]
        budgets = nominal_budgets(run)
        cell["seeds"].append(run["seed"])
        cell["budgets"] = cell["budgets"] or budgets
        cell["train"] = cell["train"] or {k: run.get("train_config", run["config"]).get(k)
                                          for k in ("recipe", "max_epochs", "patience", "reweight")}
        cell["train"]["recipe"] = run["config"].get("recipe")
        for r, rec in enumerate(run["rounds"]):
            cell["f1"][r].append(rec["f1"])
            cell["words"][r].append(rec["words"])
            cell["tokens"][r].append(rec["llm_tokens"])
            cell["sentences"][r].append(rec["labels"])
        cell["auc"][run["seed"]] = area_under_curve(budgets, [rec["f1"] for rec in run["rounds"]])
    return dict(cells)


def report(runs: list[dict[str, Any]]) -> str:
    """Markdown: F1 at each word budget, the effort actually used, AUC, paired differences and the goals."""
    cells = summarise(runs)
    if not cells:
        return "No finished runs.\n"
    lines = ["# Effort curves: F1 by words reviewed (equal word budgets)", "",
             "F1 mean ± sd over seeds at each nominal word budget (the seed set's words + r·W); words, LLM "
             "tokens and sentences are what the strategy actually used by then (mean over seeds). AUC = area "
             "under F1 vs words over the budgets, divided by their span (a mean F1).", "",
             "| dataset | teacher | noise | strategy | seeds | training | budget (words) | F1 | words used | "
             "LLM tokens | sentences |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, teacher, noise, strat), cell in sorted(cells.items()):
        train = cell["train"]
        recipe = train["recipe"] or f"legacy, ≤{train['max_epochs']} epochs"
        for r, budget in enumerate(cell["budgets"]):
            lines.append(f"| {ds} | {teacher} | {noise} | {strat} | {len(cell['seeds'])} | {recipe} | {budget:,} | "
                         f"{_mean_sd(cell['f1'][r])} | {statistics.fmean(cell['words'][r]):,.0f} | "
                         f"{statistics.fmean(cell['tokens'][r]):,.0f} | {statistics.fmean(cell['sentences'][r]):.0f} |")
    lines += ["", "Area under the F1-vs-words curve (mean ± sd over seeds); best per row in bold.", ""]
    strategies = [s for s in STRATEGIES if any(k[3] == s for k in cells)]
    lines += ["| dataset | teacher | noise | " + " | ".join(strategies) + " |",
              "|---|---|---|" + "---|" * len(strategies)]
    for ds, teacher, noise in sorted({k[:3] for k in cells}):
        means = {s: statistics.fmean(cells[(ds, teacher, noise, s)]["auc"].values())
                 for s in strategies if (ds, teacher, noise, s) in cells}
        best = max(means, key=means.__getitem__)
        row = []
        for s in strategies:
            c = cells.get((ds, teacher, noise, s))
            txt = _mean_sd(list(c["auc"].values())) + f" ({len(c['auc'])})" if c else "–"
            row.append(f"**{txt}**" if s == best else txt)
        lines.append(f"| {ds} | {teacher} | {noise} | " + " | ".join(row) + " |")
    lines += ["", "Paired differences at the last word budget, in F1 points (same dataset, teacher, noise and "
              "seed), and the issue's goals.", "",
              "| dataset | teacher | noise | comparison | seeds | per seed | mean | goal | met |",
              "|---|---|---|---|---|---|---|---|---|"]
    for ds, teacher, noise in sorted({k[:3] for k in cells}):
        for a, b, goal in paired_goals(cells, ds, teacher, noise):
            diffs = paired_last(cells, (ds, teacher, noise, a), (ds, teacher, noise, b))
            if not diffs:
                continue
            mean = statistics.fmean(diffs)
            lines.append(f"| {ds} | {teacher} | {noise} | {a} − {b} | {len(diffs)} | "
                         f"{', '.join(f'{d:+.1f}' for d in diffs)} | {mean:+.1f} | ≥ {goal:+.1f} | "
                         f"{'yes' if mean >= goal else 'no'} |")
    ranking = average_ranking(cells)
    if ranking:
        best = ranking[0][0]
        lines += ["", "On average (the issue's third goal, which picks the product default): mean AUC over the "
                  "(dataset, teacher, noise) cells that every strategy has run, each cell first averaged over its "
                  "seeds, and the mean of the paired per-seed AUC differences to the best.", "",
                  "| rank | strategy | cells | mean AUC | mean AUC − best's (paired, per seed) | seed pairs |",
                  "|---|---|---|---|---|---|"]
        for rank, (strat, n_cells, mean_auc) in enumerate(ranking, 1):
            gaps = paired_auc_gaps(cells, strat, best)
            gap = f"{100 * statistics.fmean(gaps):+.1f} points" if gaps and strat != best else "–"
            lines.append(f"| {rank} | {strat} | {n_cells} | {mean_auc:.3f} | {gap} | "
                         f"{len(gaps) if strat != best else '–'} |")
    return "\n".join(lines) + "\n"


def _complete_cells(cells: dict[tuple[str, str, str, str], dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The (dataset, teacher, noise) cells in which every strategy that ran anywhere has run."""
    strategies = {k[3] for k in cells}
    return sorted(c for c in {k[:3] for k in cells} if all((*c, s) in cells for s in strategies))


def average_ranking(cells: dict[tuple[str, str, str, str], dict[str, Any]]) -> list[tuple[str, int, float]]:
    """(strategy, cells, mean AUC) best first, over the cells every strategy has (so none is favoured by
    running only where AUCs are high); [] when there is no such cell."""
    complete = _complete_cells(cells)
    if not complete:
        return []
    strategies = [s for s in STRATEGIES if any(k[3] == s for k in cells)]
    means = {s: statistics.fmean(statistics.fmean(cells[(*c, s)]["auc"].values()) for c in complete)
             for s in strategies}
    return sorted(((s, len(complete), m) for s, m in means.items()), key=lambda t: -t[2])


def paired_auc_gaps(cells: dict[tuple[str, str, str, str], dict[str, Any]], a: str, b: str) -> list[float]:
    """AUC of `a` − AUC of `b` for every (cell, seed) both ran, over the cells every strategy has."""
    gaps = []
    for c in _complete_cells(cells):
        auc_a, auc_b = cells[(*c, a)]["auc"], cells[(*c, b)]["auc"]
        gaps += [auc_a[seed] - auc_b[seed] for seed in sorted(set(auc_a) & set(auc_b))]
    return gaps


def paired_goals(cells: dict[tuple[str, str, str, str], dict[str, Any]], ds: str, teacher: str,
                 noise: str) -> list[tuple[str, str, float]]:
    """The issue's goals: the best strategy (by mean AUC) ≥ random + 3 F1; density hybrid ≥ least confidence."""
    present = [s for s in STRATEGIES if (ds, teacher, noise, s) in cells]
    goals: list[tuple[str, str, float]] = []
    others = [s for s in present if s != "random"]
    if "random" in present and others:
        best = max(others, key=lambda s: statistics.fmean(cells[(ds, teacher, noise, s)]["auc"].values()))
        goals.append((best, "random", 3.0))
    if "density" in present and "lc" in present:
        goals.append(("density", "lc", 0.0))
    return goals


def paired_last(cells: dict[tuple[str, str, str, str], dict[str, Any]], a: tuple[str, str, str, str],
                b: tuple[str, str, str, str]) -> list[float]:
    """100 × (F1 of a − F1 of b) at the last round, for each seed both have."""
    ca, cb = cells.get(a), cells.get(b)
    if ca is None or cb is None:
        return []
    last_a = dict(zip(ca["seeds"], ca["f1"][max(ca["f1"])], strict=True))
    last_b = dict(zip(cb["seeds"], cb["f1"][max(cb["f1"])], strict=True))
    return [100 * (last_a[s] - last_b[s]) for s in sorted(set(last_a) & set(last_b))]


def plot_curves(runs: list[dict[str, Any]], out_dir: Path, profile: str) -> list[Path]:
    """Per dataset: F1 vs words reviewed and F1 vs LLM tokens, one panel per (teacher, noise), mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out_dir.mkdir(parents=True, exist_ok=True)
    cells = summarise(runs)
    paths = []
    for ds in sorted({k[0] for k in cells}):
        panels = sorted({k[1:3] for k in cells if k[0] == ds})
        fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 7), squeeze=False)
        for col, (teacher, noise) in enumerate(panels):
            for strat in STRATEGIES:
                cell = cells.get((ds, teacher, noise, strat))
                if cell is None:
                    continue
                rounds = sorted(cell["f1"])
                f1 = [statistics.fmean(cell["f1"][r]) for r in rounds]
                for row, key in enumerate(("words", "tokens")):
                    xs = [statistics.fmean(cell[key][r]) for r in rounds]
                    axes[row][col].plot(xs, f1, marker="o", label=strat)
            axes[0][col].set_title(f"{ds}: {teacher}, {noise} noise")
            axes[0][col].set_xlabel("words reviewed")
            axes[1][col].set_xlabel("LLM tokens (estimated)")
            for row in (0, 1):
                # Thousands as "150k": six-digit token counts overlap on a 4.5-inch panel.
                axes[row][col].xaxis.set_major_formatter(
                    matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))
                axes[row][col].set_ylabel("test entity F1")
                axes[row][col].grid(alpha=0.3)
        axes[0][-1].legend(loc="lower right")
        fig.tight_layout()
        path = out_dir / f"effort-{profile}-{ds}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def cpu_hours(runs: list[dict[str, Any]], n_runs: int) -> float:
    """Estimate for `n_runs` runs from the mean `seconds` of finished ones (1 thread per run)."""
    secs = [r["seconds"] for r in runs if r.get("seconds")]
    return math.nan if not secs else statistics.fmean(secs) * n_runs / 3600


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="cpu")
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--teachers", nargs="+", default=TEACHERS, choices=TEACHERS)
    ap.add_argument("--noise", nargs="+", default=NOISE_KINDS, choices=NOISE_KINDS)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--recipe", help="training recipe (training.trainer.RECIPES); default: the profile's epochs")
    ap.add_argument("--encoder", help="local encoder checkpoint (default: the packaged MiniLM)")
    ap.add_argument("--data-root", type=Path, default=DATA)
    ap.add_argument("--out-root", type=Path, default=OUT_ROOT)
    ap.add_argument("--report", action="store_true", help="write report.md and the curves from finished runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = args.out_root / args.profile
    if args.report:
        runs = load_runs(root)
        text = report(runs)
        root.mkdir(parents=True, exist_ok=True)
        (root / "report.md").write_text(text)
        figs = plot_curves(runs, REPO / "docs" / "figures" if args.out_root == OUT_ROOT else root, args.profile)
        n = len(args.datasets) * len(args.teachers) * len(args.noise) * len(args.strategies) * len(args.seeds)
        print(text)
        print(f"figures: {', '.join(str(f) for f in figs)}")
        print(f"CPU-hours for the {n} runs selected, at the finished runs' mean: {cpu_hours(runs, n):.1f}")
        return
    run_grid(args.datasets, args.teachers, args.noise, args.strategies, args.seeds, args.profile, args.out_root,
             data_root=args.data_root, recipe=args.recipe, encoder=args.encoder)


if __name__ == "__main__":
    main()
