"""`llmaaa simulate`: the offline LLMaAA loop on a dataset with gold labels.

The simulated teacher (`llmaaa.simulation`, the same noise model as `llmaaa fake-llm`) plays the LLM,
in-process. Its answers go through the same grounding as real LLM replies. Roles, as in the paper:
- `--gold-size` sentences from dev (each with at least one entity) are the human-verified set: the meta set
  for reweighting, the early-stopping set, and the k-NN demonstration pool;
- the train split is the unlabeled pool; a random seed set is LLM-labeled first;
- each round retrains the student from the pretrained weights, evaluates it on test, acquires the next
  batch with the chosen strategy, and has the teacher label it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data import Example, label_set, load_split, sample

log = logging.getLogger(__name__)


@dataclass
class SimulationConfig:
    data: Path
    out: Path
    strategy: str = "random"
    seed_size: int = 50
    round_size: int = 50
    rounds: int = 9
    gold_size: int = 100
    teacher_noise: float = 0.3
    reweight: bool = True
    max_epochs: int = 10
    patience: int = 3
    pool_size: int | None = None
    test_size: int | None = None
    seed: int = 42
    encoder: str | None = None
    demo_aware: bool = False
    gold_only: bool = False
    batch_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Round 0 (the random seed set) is the same for every strategy, and training is seeded: a folder here
    # lets runs that differ only in strategy share round 0's model outputs instead of training it again.
    round0_cache: Path | None = None


def register(sub: Any) -> None:
    p = sub.add_parser("simulate", help="offline LLMaAA loop with a simulated teacher (gold labels + noise)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with train/dev/test .jsonl")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strategy", default="random", help="acquisition strategy (see acquisition.get_strategy)")
    p.add_argument("--seed-size", type=int, default=50)
    p.add_argument("--round-size", type=int, default=50)
    p.add_argument("--rounds", type=int, default=9, help="acquisition rounds; 0 trains once on the seed set")
    p.add_argument("--gold-size", type=int, default=100, help="human-verified sentences (from dev)")
    p.add_argument("--teacher-noise", type=float, default=0.3, help="simulated LLM noise in [0, 1]")
    rw = p.add_mutually_exclusive_group()
    rw.add_argument("--reweight", dest="reweight", action="store_true", default=True)
    rw.add_argument("--no-reweight", dest="reweight", action="store_false")
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--pool-size", type=int, help="subsample the unlabeled pool (quick runs)")
    p.add_argument("--test-size", type=int, help="subsample the test split (quick runs)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--encoder", help="local Hugging Face checkpoint dir (default: packaged MiniLM)")
    p.add_argument("--demo-aware", action="store_true",
                   help="simulation assumption: entities seen in the k-NN demonstrations are labeled right")
    p.add_argument("--gold-only", action="store_true",
                   help="baseline: train on the gold set alone (no LLM labels, no acquisition)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the trainer's)")
    p.add_argument("--round0-cache", type=Path,
                   help="folder to share round 0 (the same random seed set) between runs that differ in strategy")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    cfg = SimulationConfig(
        data=args.data, out=args.out, strategy=args.strategy, seed_size=args.seed_size,
        round_size=args.round_size, rounds=args.rounds, gold_size=args.gold_size,
        teacher_noise=args.teacher_noise, reweight=args.reweight, max_epochs=args.max_epochs,
        patience=args.patience, pool_size=args.pool_size, test_size=args.test_size, seed=args.seed,
        encoder=args.encoder, demo_aware=args.demo_aware, gold_only=args.gold_only, batch_size=args.batch_size,
        round0_cache=args.round0_cache,
    )
    results = run_simulation(cfg)
    print(json.dumps({"teacher": results["teacher"], "final": results["final"]}, indent=2))
    return 0


def pick_gold(dev: list[Example], n: int, seed: int) -> list[Example]:
    """`n` dev sentences with at least one entity (the paper's gold set), reproducibly."""
    with_entities = [ex for ex in dev if ex.spans]
    if len(with_entities) < n:
        raise ValueError(f"only {len(with_entities)} dev sentences have entities; --gold-size {n} is too large")
    return random.Random(seed).sample(with_entities, n)


class Teacher:
    """The simulated LLM, answered in-process and grounded like a real reply."""

    def __init__(self, pool: list[Example], labels: list[str], noise: float, seed: int,
                 gold: list[Example], demo_aware: bool, k: int = 5) -> None:
        from backend.annotator.parsing import ground
        from backend.labeling_config import LabelSchema, LabelSpec
        from llmaaa.simulation.teacher import SimulatedTeacher

        self._ground = ground
        self.schema = LabelSchema("label", "text", "text", [LabelSpec(lab, lab) for lab in labels])
        self.sim = SimulatedTeacher(pool, noise=noise, seed=seed, demo_aware=demo_aware)
        self.demo_aware = demo_aware
        self.k = k
        self.calls = 0
        self.gold = gold
        self._gold_emb: np.ndarray | None = None
        self._embedder: Any = None

    def _demo_surfaces(self, text: str) -> list[str]:
        if not self.demo_aware:
            return []
        if self._embedder is None:
            from training.embedder import SentenceEmbedder

            self._embedder = SentenceEmbedder()
            self._gold_emb = self._embedder.embed([g.text for g in self.gold])
        assert self._gold_emb is not None
        sims = self._gold_emb @ self._embedder.embed([text])[0]
        nearest = np.argsort(-sims)[: self.k]
        return [g.text[s.start : s.end] for i in nearest for g in [self.gold[int(i)]] for s in g.spans]

    def label(self, ex: Example) -> Example:
        self.calls += 1
        pairs = self.sim.answer(ex.text, demo_surface_forms=self._demo_surfaces(ex.text)) or []
        grounded = self._ground(ex.text, [(p["span"], p["type"]) for p in pairs], self.schema)
        return Example(ex.id, ex.text, list(grounded.spans), ex.tokens)


def same_spans(a: Example, b: Example) -> bool:
    return {(s.start, s.end, s.label) for s in a.spans} == {(s.start, s.end, s.label) for s in b.spans}


def weight_diagnostics(weights: dict[str, float], label_is_correct: dict[str, bool], batch_size: int,
                       skipped_batches: int, steps: int) -> dict[str, Any]:
    """What the learned sentence weights did with the teacher's errors, which only a simulation knows.

    `weights` are the trainer's mean normalised weights (1/batch_size is an average share), so they are
    reported relative to that: 1.0 = average, 0 = never up-weighted. A label is correct when its spans
    equal the gold spans exactly. `auc` is the chance that a correct label outweighs a wrong one (0.5 = the
    weights carry no signal about label noise); None when every label is correct or every one wrong."""
    from sklearn.metrics import roc_auc_score

    ids = [i for i in weights if i in label_is_correct]
    rel = np.array([weights[i] * batch_size for i in ids])
    correct = np.array([label_is_correct[i] for i in ids], dtype=bool)

    def mean(mask: np.ndarray) -> float | None:
        return float(rel[mask].mean()) if mask.any() else None

    return {
        "sentences": len(ids),
        "wrong_label_share": float((~correct).mean()) if ids else None,
        "zero_weight_share": float((rel == 0).mean()) if ids else None,
        "mean_relative_weight_correct": mean(correct),
        "mean_relative_weight_wrong": mean(~correct),
        "auc": float(roc_auc_score(correct, rel)) if 0 < correct.sum() < len(ids) else None,
        "skipped_batch_share": skipped_batches / steps if steps else None,
    }


# Fields that do not change round 0: what happens after it, and where results go.
_NOT_ROUND0 = {"out", "strategy", "rounds", "round_size", "round0_cache"}


def round0_cache_file(cfg: SimulationConfig) -> Path | None:
    if cfg.round0_cache is None:
        return None
    key = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in _NOT_ROUND0}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cfg.round0_cache / f"round0-{digest}.npz"


def save_round0(path: Path, record: dict[str, Any], unlabeled_ids: list[str], outputs: Any, labeled: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, record=json.dumps(record), unlabeled_ids=np.array(unlabeled_ids),
             marginals=np.concatenate(outputs.marginals), lengths=np.array([len(m) for m in outputs.marginals]),
             embeddings=outputs.embeddings, labeled_embeddings=labeled.embeddings)
    os.replace(tmp, path)  # atomic: two grid processes may compute the same round 0


def load_round0(path: Path, unlabeled_ids: list[str]) -> tuple[dict[str, Any], Any, Any] | None:
    """Round 0's record and pool outputs, or None when not cached (or cached for another pool)."""
    from training.model import PoolOutputs

    if not path.exists():
        return None
    with np.load(path) as z:
        if z["unlabeled_ids"].tolist() != unlabeled_ids:
            log.warning("round-0 cache %s is for another pool; training round 0", path)
            return None
        marginals = np.split(z["marginals"], np.cumsum(z["lengths"])[:-1])
        return (json.loads(str(z["record"])), PoolOutputs(list(marginals), z["embeddings"]),
                PoolOutputs([], z["labeled_embeddings"]))


def run_simulation(cfg: SimulationConfig) -> dict[str, Any]:
    from acquisition import get_strategy
    from acquisition.base import PoolData
    from training.metrics import entity_scores
    from training.trainer import TrainConfig, train

    started = time.time()
    cfg.out.mkdir(parents=True, exist_ok=True)
    pool_all = load_split(cfg.data / "train.jsonl")
    dev = load_split(cfg.data / "dev.jsonl")
    test = sample(load_split(cfg.data / "test.jsonl"), cfg.test_size, cfg.seed)
    pool = sample(pool_all, cfg.pool_size, cfg.seed)
    gold = pick_gold(dev, cfg.gold_size, cfg.seed)
    labels = label_set(pool_all + dev)
    train_cfg_kwargs: dict[str, Any] = {"max_epochs": cfg.max_epochs, "patience": cfg.patience,
                                        "reweight": cfg.reweight, "seed": cfg.seed}
    if cfg.batch_size:
        train_cfg_kwargs["batch_size"] = cfg.batch_size
    train_cfg = TrainConfig(**train_cfg_kwargs)

    def evaluate(model: Any) -> dict[str, float]:
        preds = model.predict([ex.text for ex in test])
        scores = entity_scores([ex.spans for ex in test], preds, [ex.text for ex in test])
        return {k: float(scores[k]) for k in ("precision", "recall", "f1")}

    rounds: list[dict[str, Any]] = []
    if cfg.gold_only:
        result = train(gold, gold, TrainConfig(**{**train_cfg_kwargs, "reweight": False}), labels=labels,
                       encoder=cfg.encoder)
        final = evaluate(result.model)
        rounds.append({"round": 0, "labels": 0, "gold": len(gold), **final, "train": result.metrics})
        teacher_scores = {"f1": None, "precision": None, "recall": None, "labels": 0}
    else:
        teacher = Teacher(pool, labels, cfg.teacher_noise, cfg.seed, gold, cfg.demo_aware)
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(pool))
        labeled_idx: list[int] = [int(i) for i in order[: cfg.seed_size]]
        llm_labels: dict[int, Example] = {i: teacher.label(pool[i]) for i in labeled_idx}
        strategy = get_strategy(cfg.strategy)
        final = {}
        cache_file = round0_cache_file(cfg) if cfg.rounds > 0 else None
        for r in range(cfg.rounds + 1):
            unlabeled = [i for i in range(len(pool)) if i not in llm_labels]
            cached = load_round0(cache_file, [pool[i].id for i in unlabeled]) if r == 0 and cache_file else None
            if cached is not None:
                record, outputs, labeled_out = cached
                final = {k: record[k] for k in ("precision", "recall", "f1")}
                rounds.append({**record, "from_cache": True})
                log.info("round 0: %d LLM labels, test F1 %.4f (shared round 0 from %s)", len(labeled_idx),
                         final["f1"], cache_file)
            else:
                train_set = [llm_labels[i] for i in labeled_idx]
                result = train(train_set, gold, train_cfg, labels=labels, encoder=cfg.encoder)
                final = evaluate(result.model)
                rounds.append({"round": r, "labels": len(labeled_idx), **final,
                               "best_epoch": result.metrics.get("best_epoch"),
                               "train_seconds": result.metrics.get("train_time_s")})
                if result.sentence_weights:
                    rounds[-1]["weights"] = weight_diagnostics(
                        result.sentence_weights,
                        {pool[i].id: same_spans(llm_labels[i], pool[i]) for i in labeled_idx},
                        train_cfg.batch_size, result.metrics.get("skipped_zero_weight_batches", 0),
                        result.metrics.get("steps", 0))
                log.info("round %d: %d LLM labels, test F1 %.4f", r, len(labeled_idx), final["f1"])
                if r == cfg.rounds or not unlabeled:
                    break
                outputs = result.model.pool_outputs([pool[i].text for i in unlabeled])
                labeled_out = result.model.pool_outputs([pool[i].text for i in labeled_idx])
                if r == 0 and cache_file:
                    save_round0(cache_file, rounds[-1], [pool[i].id for i in unlabeled], outputs, labeled_out)
            k = min(cfg.round_size, len(unlabeled))
            pool_data = PoolData(marginals=outputs.marginals, embeddings=outputs.embeddings,
                                 ids=[pool[i].id for i in unlabeled],
                                 labeled_embeddings=labeled_out.embeddings)
            picked = strategy.select(pool_data, k, rng=np.random.default_rng(cfg.seed + r + 1))
            for j in picked:
                i = unlabeled[int(j)]
                labeled_idx.append(i)
                llm_labels[i] = teacher.label(pool[i])
        produced = list(llm_labels.items())
        t = entity_scores([pool[i].spans for i, _ in produced], [ex.spans for _, ex in produced],
                          [pool[i].text for i, _ in produced])
        teacher_scores = {"f1": float(t["f1"]), "precision": float(t["precision"]),
                          "recall": float(t["recall"]), "labels": len(produced), "calls": teacher.calls}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    results = {"teacher": teacher_scores, "rounds": rounds, "final": final, "config": config,
               "gold_size": len(gold), "pool_size": len(pool), "test_size": len(test),
               "seconds": round(time.time() - started, 1)}
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2))
    plot_learning_curve(results, cfg.out / "learning_curve.png")
    return results


def plot_learning_curve(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["labels"] for r in results["rounds"]]
    ys = [r["f1"] for r in results["rounds"]]
    c = results["config"]
    ax.plot(xs, ys, marker="o", label=f"student ({c['strategy']}, reweight={c['reweight']})")
    if results["teacher"].get("f1") is not None:
        ax.axhline(results["teacher"]["f1"], color="grey", linestyle="--", label="simulated teacher")
    ax.set_xlabel("LLM-labeled sentences")
    ax.set_ylabel("test entity F1")
    ax.set_title(f"{Path(c['data']).name}: noise {c['teacher_noise']}, gold {results['gold_size']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
