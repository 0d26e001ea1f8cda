"""What each acquisition strategy picks in round 1 of the simulation grid, from round 0's shared outputs.

    .venv/bin/python -m benchmarks.selection_profile [--profile cpu] [--datasets ...] [--teachers ...] [--seeds ...]

The grid's budget counts sentences, not words or entities, so a strategy that picks long, entity-dense
sentences gets more supervision per label. This reads the round-0 cache that `benchmarks.simulate_grid`
leaves (no training here), lets every strategy pick round 1's batch from the same student outputs, and
reports per strategy: words and gold entities per picked sentence, the share with no entity, the share
the simulated teacher labels wrongly, and the overlap with least confidence's batch. Writes
`benchmarks/results/simulate/<profile>/selection_profile.md`.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import simulate_grid
from benchmarks.simulate_grid import PROFILES, TEACHER_NOISE, grid_config
from training.data import Example

COLUMNS = [("words", "words / sentence"), ("entities", "gold entities / sentence"),
           ("no_entity", "no entity"), ("teacher_wrong", "teacher wrong"), ("overlap_lc", "overlap with lc")]


def batch_profile(picked: Sequence[Example], teacher_wrong: Sequence[bool], reference: set[str] | None = None
                  ) -> dict[str, float]:
    """Composition of one picked batch; `reference` is another strategy's batch (ids) to measure overlap."""
    if not picked:
        raise ValueError("an empty batch has no profile")
    ids = {ex.id for ex in picked}
    return {
        "words": float(np.mean([len(ex.tokens) if ex.tokens else len(ex.text.split()) for ex in picked])),
        "entities": float(np.mean([len(ex.spans) for ex in picked])),
        "no_entity": float(np.mean([not ex.spans for ex in picked])),
        "teacher_wrong": float(np.mean(teacher_wrong)),
        "overlap_lc": len(ids & reference) / len(ids) if reference is not None else float("nan"),
    }


def round1_batches(dataset: str, teacher_kind: str, seed: int, profile: str) -> dict[str, dict[str, float]] | None:
    """Each strategy's round-1 batch profile for one grid cell, or None when round 0 is not cached."""
    from acquisition import available_strategies, get_strategy
    from acquisition.base import PoolData
    from llmaaa.simulate import Teacher, load_round0, pick_gold, round0_cache_file, same_spans
    from training.data import label_set, load_split, sample

    # The same setup as llmaaa.simulate.run_simulation; load_round0 checks the unlabeled ids match.
    cfg = grid_config(dataset, teacher_kind, "mnlp", seed, profile, Path("/dev/null"))
    cache = round0_cache_file(cfg)
    if cache is None or not cache.exists():
        return None
    pool_all = load_split(cfg.data / "train.jsonl")
    dev = load_split(cfg.data / "dev.jsonl")
    pool = sample(pool_all, cfg.pool_size, cfg.seed)
    gold = pick_gold(dev, cfg.gold_size, cfg.seed)
    teacher = Teacher(pool, label_set(pool_all + dev), cfg.teacher_noise, cfg.seed, gold, cfg.demo_aware)
    labeled = {int(i) for i in np.random.default_rng(cfg.seed).permutation(len(pool))[: cfg.seed_size]}
    unlabeled = [i for i in range(len(pool)) if i not in labeled]
    loaded = load_round0(cache, [pool[i].id for i in unlabeled])
    if loaded is None:
        return None
    _, outputs, labeled_out = loaded
    data = PoolData(marginals=outputs.marginals, embeddings=outputs.embeddings,
                    ids=[pool[i].id for i in unlabeled], labeled_embeddings=labeled_out.embeddings)
    k = min(cfg.round_size, len(unlabeled))
    # BALD needs MC-dropout passes, which need the round-0 model; the cache keeps only its outputs.
    batches = {name: [pool[unlabeled[int(j)]] for j in get_strategy(name).select(data, k, rng=cfg.seed + 1)]
               for name in available_strategies() if not get_strategy(name).needs_mc_marginals}
    lc = {ex.id for ex in batches["least_confidence"]}
    out = {name: batch_profile(b, [not same_spans(teacher.label(ex), ex) for ex in b], lc)
           for name, b in batches.items()}
    everything = [pool[i] for i in unlabeled]
    out["(whole pool)"] = batch_profile(everything, [not same_spans(teacher.label(ex), ex) for ex in everything])
    return out


def table(cells: dict[tuple[str, str], list[dict[str, dict[str, float]]]]) -> str:
    lines = ["What each strategy picks for round 1 (k = the round size) from the same round-0 student, mean over",
             "seeds; shares are of the picked sentences. Budget is counted in sentences.", ""]
    for (dataset, teacher), runs in sorted(cells.items()):
        lines += [f"**{dataset}, {teacher} teacher** ({len(runs)} seeds)", "",
                  "| strategy | " + " | ".join(name for _, name in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for strategy in runs[0]:
            values = [np.mean([r[strategy][key] for r in runs]) for key, _ in COLUMNS]
            cells_txt = ["–" if np.isnan(v) else f"{v:.2f}" for v in values]
            lines.append(f"| {strategy} | " + " | ".join(cells_txt) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--datasets", nargs="+", default=sorted(TEACHER_NOISE))
    ap.add_argument("--teachers", nargs="+", default=["chatgpt", "weak"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = ap.parse_args(argv)
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for dataset in args.datasets:
        for teacher in args.teachers:
            for seed in args.seeds:
                profile = round1_batches(dataset, teacher, seed, args.profile)
                if profile is None:
                    print(f"skipped {dataset} {teacher} seed {seed}: round 0 not in the cache (run the grid first)")
                    continue
                cells[(dataset, teacher)].append(profile)
    if not cells:
        print("nothing to profile")
        return 1
    text = table(cells)
    (simulate_grid.OUT_ROOT / args.profile / "selection_profile.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
