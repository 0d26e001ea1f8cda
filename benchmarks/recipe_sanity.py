"""A one-seed sanity check of the training presets on noisy simulated labels (not the converged grid).

    LLMAAA_TORCH_THREADS=1 .venv/bin/python benchmarks/recipe_sanity.py --pool 200 --epochs 6

A random BC5CDR train sample (`--pool`) is labelled by the simulated teacher (`llmaaa.simulation`,
random or systematic noise at each `--teachers` level); 100 dev sentences with entities are the
verified set, of which the same 30 % (`split_meta_dev`) is every preset's early-stopping set and the rest
the meta set; the student is scored on a test sample. Each preset in `--presets` trains
once on the same labels. It picks a first guess for the "recipe" preset; the grid
(benchmarks/converged_grid.py) decides the defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DATA, write_result  # noqa: E402

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("plain", {}),
    "plain+gold": ("plain", {"gold_weight": 0.5}),
    "l2rw": ("l2rw", {}),
    "recipe": ("recipe", {}),
    "recipe-no-gold": ("recipe", {"gold_weight": 0.0}),
    "recipe-token": ("recipe", {"weight_granularity": "token"}),
    "recipe-full": ("recipe", {"meta_full": True, "meta_every": 8}),
}


def noisy_labels(pool: list, kind: str, noise: float, seed: int) -> list:
    from llmaaa.simulation.teacher import SimulatedTeacher
    from training.data import Example

    teacher = SimulatedTeacher(pool, noise=noise, seed=seed, kind=kind)
    return [Example(ex.id, ex.text, list(teacher.answer_spans(ex.text) or []), ex.tokens) for ex in pool]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    parser.add_argument("--pool", type=int, default=200)
    parser.add_argument("--gold", type=int, default=100)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teachers", nargs="*", default=["systematic:0.6", "random:0.3"],
                        help="kind:noise pairs")
    parser.add_argument("--presets", nargs="*", default=["plain", "plain+gold", "l2rw", "recipe"],
                        choices=sorted(PRESETS))
    parser.add_argument("--result-name", default="recipe_sanity", help="benchmarks/results/<name>.json")
    args = parser.parse_args(argv)

    from training.data import load_split, sample
    from training.metrics import entity_scores
    from training.trainer import TrainConfig, split_meta_dev, train

    pool = sample(load_split(args.data / "train.jsonl"), args.pool, args.seed)
    dev = [ex for ex in load_split(args.data / "dev.jsonl") if ex.spans]
    gold = random.Random(args.seed).sample(dev, args.gold)
    test = sample(load_split(args.data / "test.jsonl"), args.test, args.seed)
    meta, dev_set = split_meta_dev(gold, TrainConfig().dev_fraction, args.seed)  # one split for every preset
    rows = []
    for spec in args.teachers:
        kind, noise = spec.split(":")
        labelled = noisy_labels(pool, kind, float(noise), args.seed)
        teacher_f1 = entity_scores([ex.spans for ex in pool], [ex.spans for ex in labelled],
                                   [ex.text for ex in pool])["f1"]
        for name in args.presets:
            recipe, extra = PRESETS[name]
            config = TrainConfig.from_recipe(recipe, max_epochs=args.epochs, patience=args.patience,
                                             seed=args.seed, **extra)
            started = time.process_time()
            result = train(labelled, meta, config, progress=False, dev_examples=dev_set)
            cpu = time.process_time() - started
            pred = result.model.predict([ex.text for ex in test])
            f1 = entity_scores([ex.spans for ex in test], pred, [ex.text for ex in test])["f1"]
            row = {"teacher": spec, "teacher_f1": round(teacher_f1, 3), "preset": name, "test_f1": round(f1, 3),
                   "dev_f1": round(result.metrics["dev_f1"], 3), "best_epoch": result.metrics["best_epoch"],
                   "epochs_run": result.metrics["epochs_run"], "cpu_s": round(cpu, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_result(args.result_name, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    print("\n| teacher | teacher F1 (pool) | preset | test F1 | dev F1 | best epoch / run | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['teacher']} | {r['teacher_f1']:.3f} | {r['preset']} | {r['test_f1']:.3f} | {r['dev_f1']:.3f} | "
              f"{r['best_epoch']} / {r['epochs_run']} | {r['cpu_s']:.0f} |")


if __name__ == "__main__":
    main()
