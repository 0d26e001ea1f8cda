"""Early stopping with the gold term: on the verified sentences it trains on (before) vs held-out ones (now).

    LLMAAA_TORCH_THREADS=1 .venv/bin/python benchmarks/early_stopping.py --labels 100 --test 500

The first converged-grid round in miniature: BC5CDR, `--labels` random train sentences labelled by the
simulated ChatGPT-like systematic teacher, 100 verified dev sentences (as `llmaaa simulate` picks them),
the `recipe` preset (gold term 0.5), at most 20 epochs, patience 3. "before" is the trainer at
`--before` (read from git), which early-stopped on the 100 verified sentences it trained on; "now" is
the trainer as `llmaaa simulate` calls it: meta = 70 of them, early stopping on the other 30;
"now-to-cap" is "now" without early stopping (patience = epochs); "extra-dev" keeps all 100 as the meta
set and early-stops on 30 other verified dev sentences, so it differs from "before" in the stopping set only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DATA, RESULTS, write_result  # noqa: E402
from benchmarks.train_speed import load_baseline  # noqa: E402

BEFORE_COMMIT = "70733e2"  # the trainer before the held-out early-stopping set


def run(trainer: Any, labelled: list, verified: list, test: list, args: argparse.Namespace,
        dev: list | None, patience: int) -> dict[str, Any]:
    """One training run; `dev` None: the trainer's own rule (held out of `verified` by the current one)."""
    from training.metrics import entity_scores

    config = trainer.TrainConfig.from_recipe("recipe", max_epochs=args.epochs, patience=patience, seed=args.seed)
    started = time.process_time()
    if dev is None:
        result = trainer.train(labelled, verified, config, progress=False)
    else:
        result = trainer.train(labelled, verified, config, progress=False, dev_examples=dev)
    cpu = time.process_time() - started
    texts = [ex.text for ex in test]
    test_f1 = entity_scores([ex.spans for ex in test], result.model.predict(texts), texts)["f1"]
    m = result.metrics
    return {"epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"], "stopped_early": m["stopped_early"],
            "n_meta": m["n_meta"], "n_dev": m.get("n_dev", m["n_meta"]), "test_f1": round(test_f1, 4),
            "dev_f1_curve": [round(x, 3) for x in m["dev_f1_curve"]],
            "dev_loss_curve": [round(x, 4) for x in m["dev_loss_curve"]], "cpu_s": round(cpu, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--gold", type=int, default=100)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--before", default=BEFORE_COMMIT)
    parser.add_argument("--runs", nargs="*", default=["before", "now", "now-to-cap"],
                        choices=["before", "now", "now-to-cap", "extra-dev"])
    parser.add_argument("--result-name", default="early_stopping/bc5cdr-systematic-recipe")
    args = parser.parse_args(argv)

    import training.trainer as now
    from benchmarks.weight_auc import simulated_labels
    from llmaaa.simulate import pick_gold
    from training.data import load_split, sample

    pool = sample(load_split(args.data / "train.jsonl"), args.labels, args.seed)
    labelled = simulated_labels(pool, "systematic", args.seed)
    dev_split = load_split(args.data / "dev.jsonl")
    verified = pick_gold(dev_split, args.gold, args.seed)
    chosen = {ex.id for ex in verified}
    other_verified = pick_gold([ex for ex in dev_split if ex.id not in chosen], 30, args.seed)
    test = sample(load_split(args.data / "test.jsonl"), args.test, args.seed)
    rows = {}
    for name in args.runs:
        trainer = load_baseline(args.before) if name == "before" else now
        patience = args.epochs if name == "now-to-cap" else args.patience
        rows[name] = run(trainer, labelled, verified, test, args, other_verified if name == "extra-dev" else None,
                         patience)
        print(name, json.dumps(rows[name]), flush=True)
    (RESULTS / args.result_name).parent.mkdir(parents=True, exist_ok=True)
    write_result(args.result_name, {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows})


if __name__ == "__main__":
    main()
