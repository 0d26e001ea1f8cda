"""Seconds per training epoch: the trainer of an earlier commit against today's, in one run.

    LLMAAA_TORCH_THREADS=1 .venv/bin/python benchmarks/train_speed.py                 # default variants
    .venv/bin/python benchmarks/train_speed.py --baseline-commit 7b3f902 --train 200 --meta 100 --epochs 2

The baseline trainer is read from git (`git show <commit>:training/trainer.py`) and imported beside
the current one, so both train with the same model code on the same BC5CDR sample. Every variant is a
full `train()` call (fresh MiniLM, `--epochs` epochs, no early stop). The variants run in an ABBA
order (forward, then backward) so that a drift in machine load hits each of them alike, and each
figure is the mean of its two runs. Reported per variant: optimizer-step seconds per epoch, dev
evaluation seconds per epoch, and the ratio to the baseline of the same mode (plain or reweighted).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DATA, REPO, write_result  # noqa: E402

BASELINE_COMMIT = "7b3f902"  # the trainer before issue 14


def load_baseline(commit: str) -> Any:
    """The trainer module as of `commit`, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:training/trainer.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"baseline_trainer_{commit}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"baseline_trainer_{commit}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def variants(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, Any]]]:
    """name → (which trainer, TrainConfig overrides)."""
    common = {"max_epochs": args.epochs, "patience": args.epochs + 1, "seed": 0}
    new = {**common, "early_stop": "loss"}
    return {
        "baseline plain": ("baseline", {**common, "reweight": False}),
        "plain, unbucketed": ("current", {**new, "reweight": False, "bucket_batches": False}),
        "plain": ("current", {**new, "reweight": False}),
        "baseline l2rw": ("baseline", {**common, "reweight": True}),
        "l2rw, unbucketed": ("current", {**new, "reweight": True, "bucket_batches": False}),
        "l2rw": ("current", {**new, "reweight": True}),
        f"l2rw, meta every {args.meta_every}": ("current", {**new, "reweight": True, "meta_every": args.meta_every}),
        "recipe": ("current", {**new, **_recipe_without_schedule(), "warmup_epochs": 0, "mix_ramp_epochs": 0}),
    }


def _recipe_without_schedule() -> dict[str, Any]:
    from training.trainer import RECIPES

    return dict(RECIPES["recipe"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--train", type=int, default=200, help="training sentences (random sample)")
    parser.add_argument("--meta", type=int, default=100, help="gold meta/dev sentences")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--meta-every", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = parser.parse_args(argv)

    from training import trainer as current
    from training.data import load_split, sample

    baseline = load_baseline(args.baseline_commit)
    train_set = sample(load_split(args.data / "train.jsonl"), args.train, 0)
    meta_set = sample(load_split(args.data / "dev.jsonl"), args.meta, 0)
    table = {k: v for k, v in variants(args).items() if args.only is None or k in args.only}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in table}
    load = [os.getloadavg()[0]]
    for name in [*table, *reversed(table)]:  # ABBA
        which, overrides = table[name]
        module = baseline if which == "baseline" else current
        config = module.TrainConfig(**overrides)
        started = time.perf_counter()
        result = module.train(train_set, meta_set, config, progress=False)
        total = time.perf_counter() - started
        epochs = result.metrics["epoch_train_s"]
        runs[name].append({"epoch_s": statistics.mean(epochs), "eval_s": (result.metrics["train_time_s"] - sum(epochs))
                           / len(epochs), "total_s": total, "dev_f1": result.metrics["dev_f1"]})
        print(f"{name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    load.append(os.getloadavg()[0])
    report(args, table, runs, load)


def report(args: argparse.Namespace, table: dict, runs: dict[str, list[dict[str, float]]], load: list[float]) -> None:
    mean = {k: {m: statistics.mean(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    print(f"\nBC5CDR, {args.train} train + {args.meta} meta sentences, {args.epochs} epochs, "
          f"baseline trainer {args.baseline_commit}, threads {os.environ.get('LLMAAA_TORCH_THREADS', 'all')}, "
          f"load average {load[0]:.2f} → {load[1]:.2f}; mean of 2 runs (ABBA)\n")
    print("| variant | s/epoch (steps) | vs baseline | dev eval s/epoch | vs baseline | dev F1 |")
    print("|---|---|---|---|---|---|")
    for name, m in mean.items():
        base = mean.get("baseline l2rw" if table[name][1].get("reweight", True) else "baseline plain")
        ratio = f"{m['epoch_s'] / base['epoch_s']:.2f}×" if base else "–"
        eval_ratio = f"{m['eval_s'] / base['eval_s']:.2f}×" if base else "–"
        print(f"| {name} | {m['epoch_s']:.1f} | {ratio} | {m['eval_s']:.2f} | {eval_ratio} | {m['dev_f1']:.3f} |")
    write_result("train_speed", {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                 "load": load})
    print(json.dumps({k: round(v["epoch_s"], 2) for k, v in mean.items()}))


if __name__ == "__main__":
    main()
