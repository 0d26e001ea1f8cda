"""`llmaaa simulate`: the offline LLMaAA loop on a dataset with gold labels.

The simulated teacher (`llmaaa.simulation`, the same noise model as `llmaaa fake-llm`) plays the LLM,
in-process. Its answers go through the same grounding as real LLM replies. Roles, as in the paper:
- `--gold-size` sentences from dev (each with at least one entity) are the human-verified set and the k-NN
  demonstration pool; a seeded `dev_fraction` of it (TrainConfig, 0.3) is the early-stopping set of every
  recipe, the rest the meta set for reweighting and the gold term;
- the train split is the unlabeled pool; a random seed set is LLM-labeled first;
- each round retrains the student from the pretrained weights, evaluates it on test, acquires the next
  batch with the chosen strategy, and has the teacher label it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import os
import random
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data import Example, label_set, load_split, sample
from training.spans import Span

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
    # None: the recipe's value, or without a recipe the simulation's historical defaults (LEGACY_TRAIN).
    reweight: bool | None = None
    max_epochs: int | None = None
    patience: int | None = None
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
    # "random" / "systematic" simulated noise, or "llm": a real LLM (llmaaa.simulation.llm_teacher).
    teacher_kind: str = "random"
    # A preset of training.trainer.RECIPES, then TrainConfig fields set by name (after the fields above).
    recipe: str | None = None
    train_options: dict[str, Any] = field(default_factory=dict)
    # Cumulative LLM-label counts after each round (e.g. [100, 300, 500, 1000, 2000]); replaces seed_size,
    # round_size and rounds when given.
    budgets: list[int] | None = None
    # Continue from `progress.json` in `out` (written after every round) when it is for this configuration.
    resume: bool = False
    # What a round's budget counts (acquisition.cost): sentences, words a reviewer reads, or LLM tokens.
    # round_size is in this unit; the seed set stays seed_size random sentences, so round 0 is shared.
    budget_unit: str = "sentences"
    # Stop (progress saved, no results.json) once a round has trained on this many labels; a later run with
    # resume=True continues. Lets a grid reach a budget in every cell before going further in any.
    stop_at: int | None = None
    # --teacher llm only: where its replies and embeddings are cached (default ./.llmaaa/llm-teacher-cache).
    teacher_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.teacher_kind not in TEACHER_KINDS:
            raise ValueError(f"teacher must be one of {TEACHER_KINDS}, not {self.teacher_kind!r}")
        if self.budget_unit not in BUDGET_UNITS:
            raise ValueError(f"budget unit must be one of {BUDGET_UNITS}, not {self.budget_unit!r}")
        if self.budget_unit != "sentences" and self.budgets is not None:
            raise ValueError("--budgets counts sentences; with --budget-unit words/tokens use --seed-size, "
                             "--round-size (in the unit) and --rounds")
        if self.budgets is not None:
            b = list(self.budgets)
            if not b or b[0] < 1 or any(y <= x for x, y in zip(b, b[1:], strict=False)):
                raise ValueError(f"budgets must be positive and increasing, got {b}")
            self.budgets, self.seed_size, self.rounds = b, b[0], len(b) - 1

    def round_sizes(self) -> list[int]:
        """LLM labels acquired after round r (r = 0 .. rounds-1)."""
        if self.budgets is not None:
            return [y - x for x, y in zip(self.budgets, self.budgets[1:], strict=False)]
        return [self.round_size] * self.rounds


TEACHER_KINDS = ("random", "systematic", "llm")
BUDGET_UNITS = ("sentences", "words", "tokens")  # acquisition.cost.BUDGET_UNITS
# What `llmaaa simulate` trained with before recipes existed; used when neither a recipe nor a value is given.
LEGACY_TRAIN: dict[str, Any] = {"max_epochs": 10, "patience": 3, "reweight": True}


def parse_train_options(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> TrainConfig field values of the field's type; unknown keys are an error."""
    from training.trainer import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--train-option wants KEY=VALUE, got {pair!r}")
        if key not in names:
            raise ValueError(f"unknown training option {key!r}; TrainConfig fields: {', '.join(names)}")
        out[key] = _coerce(raw.strip(), hints[key], key)
    return out


def _coerce(raw: str, typ: Any, key: str) -> Any:
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if type(None) in typing.get_args(typ):  # Optional[X]
        if raw.lower() in ("none", "null", ""):
            return None
        typ = args[0] if len(args) == 1 else str
    if typing.get_origin(typ) is typing.Literal:
        choices = {str(c): c for c in typing.get_args(typ)}
        if raw not in choices:
            raise ValueError(f"training option {key} must be one of {sorted(choices)}, got {raw!r}")
        return choices[raw]
    try:
        if typ is bool:
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return low in ("true", "1", "yes", "on")
        if typ in (int, float, str):
            return typ(raw)
    except ValueError:
        raise ValueError(f"training option {key} wants a {getattr(typ, '__name__', typ)}, got {raw!r}") from None
    return raw  # another type: passed through as given, TrainConfig validates it


def build_train_config(cfg: SimulationConfig) -> Any:
    """The TrainConfig of a run: recipe preset (or LEGACY_TRAIN), then explicit fields, then train_options."""
    from training import trainer

    explicit = {k: v for k, v in (("max_epochs", cfg.max_epochs), ("patience", cfg.patience),
                                  ("reweight", cfg.reweight), ("batch_size", cfg.batch_size or None))
                if v is not None}
    overrides = {**explicit, **cfg.train_options, "seed": cfg.seed}
    if cfg.recipe is None:
        return trainer.TrainConfig(**{**LEGACY_TRAIN, **overrides})
    recipes = getattr(trainer, "RECIPES", None)
    if recipes is None or not hasattr(trainer.TrainConfig, "from_recipe"):
        raise ValueError("--recipe needs training.trainer.RECIPES and TrainConfig.from_recipe, not in this version")
    if cfg.recipe not in recipes:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; known: {', '.join(sorted(recipes))}")
    return trainer.TrainConfig.from_recipe(cfg.recipe, **overrides)


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
    p.add_argument("--teacher", choices=TEACHER_KINDS, default="random",
                   help="random / systematic simulated noise, or llm: a real LLM (llmaaa.simulation.llm_teacher)")
    p.add_argument("--budgets", type=_int_list,
                   help="cumulative LLM labels per round, e.g. 100,300,500,1000,2000 (replaces --seed-size, "
                        "--round-size and --rounds)")
    p.add_argument("--recipe", help="training preset of training.trainer.RECIPES (e.g. recipe, plain, l2rw)")
    p.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                   help="set a TrainConfig field (repeatable), e.g. --train-option max_epochs=40")
    rw = p.add_mutually_exclusive_group()
    rw.add_argument("--reweight", dest="reweight", action="store_true", default=None,
                    help="default: the recipe's, or on without a recipe")
    rw.add_argument("--no-reweight", dest="reweight", action="store_false")
    p.add_argument("--max-epochs", type=int, help=f"default: the recipe's, or {LEGACY_TRAIN['max_epochs']}")
    p.add_argument("--patience", type=int, help=f"default: the recipe's, or {LEGACY_TRAIN['patience']}")
    p.add_argument("--pool-size", type=int, help="subsample the unlabeled pool (quick runs)")
    p.add_argument("--test-size", type=int, help="subsample the test split (quick runs)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--encoder", help="local Hugging Face checkpoint dir (default: packaged MiniLM)")
    p.add_argument("--demo-aware", action="store_true",
                   help="simulation assumption: entities seen in the k-NN demonstrations are labeled right")
    p.add_argument("--gold-only", action="store_true",
                   help="baseline: train on the gold set alone (no LLM labels, no acquisition)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the trainer's)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last finished round (OUT/progress.json)")
    p.add_argument("--round0-cache", type=Path,
                   help="folder to share round 0 (the same random seed set) between runs that differ in strategy")
    p.add_argument("--teacher-cache", type=Path,
                   help="--teacher llm: folder of its reply cache (default ./.llmaaa/llm-teacher-cache); a re-run "
                        "with the same endpoint, model and demonstrations makes no LLM call")
    p.add_argument("--budget-unit", choices=BUDGET_UNITS, default="sentences",
                   help="what --round-size counts: sentences, words a reviewer reads, or estimated LLM tokens "
                        "(the seed set stays --seed-size sentences)")
    p.set_defaults(func=cmd_simulate)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        train_options = parse_train_options(args.train_option)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    cfg = SimulationConfig(
        data=args.data, out=args.out, strategy=args.strategy, seed_size=args.seed_size,
        round_size=args.round_size, rounds=args.rounds, gold_size=args.gold_size,
        teacher_noise=args.teacher_noise, reweight=args.reweight, max_epochs=args.max_epochs,
        patience=args.patience, pool_size=args.pool_size, test_size=args.test_size, seed=args.seed,
        encoder=args.encoder, demo_aware=args.demo_aware, gold_only=args.gold_only, batch_size=args.batch_size,
        round0_cache=args.round0_cache, teacher_kind=args.teacher, recipe=args.recipe, train_options=train_options,
        budgets=args.budgets, resume=args.resume, budget_unit=args.budget_unit,
        teacher_cache=args.teacher_cache,
    )
    try:
        build_train_config(cfg)  # a bad recipe or option fails here, before any data is loaded
    except (ValueError, TypeError) as exc:
        log.error("%s", exc)
        return 2
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
                 gold: list[Example], demo_aware: bool, k: int = 5, kind: str = "random") -> None:
        from backend.annotator.parsing import ground
        from backend.labeling_config import LabelSchema, LabelSpec
        from llmaaa.simulation.teacher import SimulatedTeacher

        self._ground = ground
        self.schema = LabelSchema("label", "text", "text", [LabelSpec(lab, lab) for lab in labels])
        self.sim = SimulatedTeacher(pool, noise=noise, seed=seed, demo_aware=demo_aware, kind=kind)
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


def make_teacher(cfg: SimulationConfig, pool: list[Example], labels: list[str], gold: list[Example]) -> Any:
    """The teacher of `cfg.teacher_kind`: anything with `.label(ex) -> Example | None` (None: not annotated)."""
    if cfg.teacher_kind in ("random", "systematic"):
        return Teacher(pool, labels, cfg.teacher_noise, cfg.seed, gold, cfg.demo_aware, kind=cfg.teacher_kind)
    try:
        module = importlib.import_module("llmaaa.simulation.llm_teacher")
    except ModuleNotFoundError as exc:
        if exc.name != "llmaaa.simulation.llm_teacher":
            raise
        raise ValueError("--teacher llm needs llmaaa.simulation.llm_teacher, which this version lacks") from None
    cls = getattr(module, "LLMTeacher", None)
    if cls is None:
        raise ValueError("llmaaa.simulation.llm_teacher defines no LLMTeacher class")
    # Its constructor is the module's business: pass what this loop knows, by the names it asks for.
    from llmaaa.llm_eval import label_descriptions  # the verbalized labels the backend and llm-eval prompt with

    known = {"labels": labels, "gold": gold, "demos": gold, "pool": pool, "seed": cfg.seed,
             "descriptions": label_descriptions(cfg.data)}
    if cfg.teacher_cache is not None:
        known["cache_dir"] = cfg.teacher_cache
    params = inspect.signature(cls).parameters
    teacher = cls(**{k: v for k, v in known.items() if k in params})
    error = getattr(module, "LLMTeacherError", None)
    return _FailedCallIsNotAnnotated(teacher, error) if isinstance(error, type) else teacher


class _FailedCallIsNotAnnotated:
    """A teacher whose `label` raises `error` on a failed LLM call: that sentence becomes None (not annotated)."""

    def __init__(self, teacher: Any, error: type[BaseException]) -> None:
        self.teacher, self.error = teacher, error

    @property
    def calls(self) -> int:
        return int(getattr(self.teacher, "calls", 0))

    @calls.setter
    def calls(self, value: int) -> None:
        if hasattr(self.teacher, "calls"):
            self.teacher.calls = value

    def label(self, ex: Example) -> Example | None:
        try:
            return self.teacher.label(ex)
        except self.error as exc:
            log.warning("LLM teacher failed on %s: %s (not annotated)", ex.id, exc)
            return None


def same_spans(a: Example, b: Example) -> bool:
    return {(s.start, s.end, s.label) for s in a.spans} == {(s.start, s.end, s.label) for s in b.spans}


def weight_diagnostics(weights: dict[str, float], label_is_correct: dict[str, bool], batch_size: int,
                       skipped_batches: int, steps: int, positive_shares: dict[str, float] | None = None,
                       has_entities: dict[str, bool] | None = None) -> dict[str, Any]:
    """What the learned sentence weights did with the teacher's errors, which only a simulation knows.

    `weights` are the trainer's mean normalised weights (1/batch_size is an average share), so they are
    reported relative to that: 1.0 = average, 0 = never up-weighted. A label is correct when its spans
    equal the gold spans exactly. `auc` is the chance that a correct label outweighs a wrong one (0.5 = the
    weights carry no signal about label noise); None when every label is correct or every one wrong.

    `auc` mixes two things besides the vote (docs/training.md): a weight grows with the sentence's gradient,
    so high-loss (mostly wrong) labels weigh more, and sentences without gold entities (almost all labelled
    right) weigh less. `auc_with_entities` (given `has_entities`, gold) leaves out the second;
    `auc_positive_share` (given the trainer's `positive_shares`) the first: it ranks by how often the
    meta gradient voted for the sentence."""
    ids = [i for i in weights if i in label_is_correct]
    rel = np.array([weights[i] * batch_size for i in ids])
    correct = np.array([label_is_correct[i] for i in ids], dtype=bool)

    def mean(mask: np.ndarray) -> float | None:
        return float(rel[mask].mean()) if mask.any() else None

    extra: dict[str, Any] = {}
    if has_entities is not None:
        with_entities = np.array([has_entities.get(i, False) for i in ids], dtype=bool)
        extra["auc_with_entities"] = _auc(correct[with_entities], rel[with_entities])
    if positive_shares is not None:
        extra["auc_positive_share"] = _auc(correct, np.array([positive_shares.get(i, 0.0) for i in ids]))

    return {
        "sentences": len(ids),
        "wrong_label_share": float((~correct).mean()) if ids else None,
        "zero_weight_share": float((rel == 0).mean()) if ids else None,
        "mean_relative_weight_correct": mean(correct),
        "mean_relative_weight_wrong": mean(~correct),
        "auc": _auc(correct, rel),
        "skipped_batch_share": skipped_batches / steps if steps else None,
        **extra,
    }


def _auc(correct: np.ndarray, score: np.ndarray) -> float | None:
    """P(score of a correct label > score of a wrong one), ties half; None without both kinds."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(correct, score)) if 0 < correct.sum() < len(correct) else None


# Fields that do not change round 0: what happens after it, and where results go.
_NOT_ROUND0 = {"out", "strategy", "rounds", "round_size", "round0_cache", "budgets", "resume", "budget_unit",
               "stop_at", "teacher_cache"}
# Keyed by the TrainConfig they resolve to instead (so `--max-epochs 10` and the default share round 0).
_TRAINING_FIELDS = {"reweight", "max_epochs", "patience", "batch_size", "recipe", "train_options"}
PROGRESS = "progress.json"


def run_key(cfg: SimulationConfig) -> str:
    """What a run's outcome depends on (not where it is written): a resumed run must have the same."""
    key = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
           if k not in ("out", "round0_cache", "resume", "stop_at", "teacher_cache")}
    key["train_config"] = asdict(build_train_config(cfg))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def load_progress(cfg: SimulationConfig) -> dict[str, Any] | None:
    path = cfg.out / PROGRESS
    if not cfg.resume or not path.exists():
        return None
    progress = json.loads(path.read_text())
    if progress.get("key") != run_key(cfg):
        log.warning("%s is for another configuration; starting afresh", path)
        return None
    return progress


def save_progress(cfg: SimulationConfig, progress: dict[str, Any]) -> None:
    tmp = cfg.out / f".{PROGRESS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": run_key(cfg), **progress}))
    os.replace(tmp, cfg.out / PROGRESS)  # atomic: a kill mid-write leaves the previous round's file


def round0_cache_file(cfg: SimulationConfig) -> Path | None:
    if cfg.round0_cache is None:
        return None
    key = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
           if k not in _NOT_ROUND0 | _TRAINING_FIELDS}
    # The resolved training configuration (recipe preset + options), so a changed recipe is another round 0.
    key["train_config"] = asdict(build_train_config(cfg))
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


def effort(texts: list[str]) -> dict[str, int]:
    """Effort so far for the LLM-labeled texts: words a reviewer reads and estimated LLM tokens."""
    from acquisition.cost import TokenCost, WordCost

    return {"words": int(WordCost().costs(texts).sum()), "llm_tokens": int(TokenCost().costs(texts).sum())}


def mc_outputs(strategy: Any, model: Any, texts: list[str], seed: int) -> list[np.ndarray] | None:
    """MC-dropout passes on the head when the strategy reads them (BALD), else None: the model's own
    `mc_head_marginals(texts, seed=)` if it has one, else `training.mc_dropout.mc_head_marginals`."""
    if not strategy.needs_mc_marginals:
        return None
    if hasattr(model, "mc_head_marginals"):
        return model.mc_head_marginals(texts, seed=seed)
    from training.mc_dropout import mc_head_marginals

    return mc_head_marginals(model, texts, seed=seed)


def select_round(strategy: Any, pool_data: Any, budget: int, unit: str, texts: list[str],
                 rng: np.random.Generator) -> np.ndarray:
    """A round's picks: `budget` sentences, or a batch within `budget` words / tokens (acquisition.cost)."""
    if unit == "sentences":
        return strategy.select(pool_data, min(budget, pool_data.n), rng=rng)
    from acquisition.cost import get_cost_model, select_within_budget

    return select_within_budget(strategy, pool_data, budget, get_cost_model(unit).costs(texts), rng)


SCORES = ("precision", "recall", "f1")  # a round's test scores, the run's `final`


@dataclass
class SimulationData:
    """One run's sentences: the unlabeled pool, the human-verified gold set, the test set, the labels."""

    pool: list[Example]
    gold: list[Example]
    test: list[Example]
    labels: list[str]


def load_simulation_data(cfg: SimulationConfig) -> SimulationData:
    pool_all = load_split(cfg.data / "train.jsonl")
    dev = load_split(cfg.data / "dev.jsonl")
    test = sample(load_split(cfg.data / "test.jsonl"), cfg.test_size, cfg.seed)
    return SimulationData(pool=sample(pool_all, cfg.pool_size, cfg.seed), gold=pick_gold(dev, cfg.gold_size, cfg.seed),
                          test=test, labels=label_set(pool_all + dev))


def evaluate(model: Any, test: list[Example]) -> dict[str, float]:
    """The student's entity scores on the test sentences."""
    from training.metrics import entity_scores

    texts = [ex.text for ex in test]
    scores = entity_scores([ex.spans for ex in test], model.predict(texts), texts)
    return {k: float(scores[k]) for k in SCORES}


class TeacherLabels:
    """The teacher's labels of pool sentences, in acquisition order. A failed call leaves its sentence
    *not annotated*: not trained on and not asked again."""

    def __init__(self, pool: list[Example], teacher: Any) -> None:
        self.pool = pool
        self.teacher = teacher
        self.by_index: dict[int, Example] = {}
        self.not_annotated: set[int] = set()
        self.order: list[int] = []  # pool indices of the labeled sentences, as acquired

    def annotate(self, indices: list[int]) -> None:
        for i in indices:
            labeled = self.teacher.label(self.pool[i])
            if labeled is None:
                self.not_annotated.add(i)
            else:
                self.by_index[i] = labeled
        self.order += [i for i in indices if i in self.by_index]

    def unlabeled(self) -> list[int]:
        return [i for i in range(len(self.pool)) if i not in self.by_index and i not in self.not_annotated]

    def texts(self, indices: list[int]) -> list[str]:
        return [self.pool[i].text for i in indices]

    def train_set(self) -> list[Example]:
        return [self.by_index[i] for i in self.order]

    def scores(self) -> dict[str, Any]:
        """The teacher's entity scores against gold on what it labeled (only a simulation knows them)."""
        from training.metrics import entity_scores

        return entity_scores([self.pool[i].spans for i in self.order], [self.by_index[i].spans for i in self.order],
                             self.texts(self.order))

    def summary(self, kind: str) -> dict[str, Any]:
        t = self.scores()
        return {"f1": float(t["f1"]), "precision": float(t["precision"]), "recall": float(t["recall"]),
                "labels": len(self.order),
                "calls": getattr(self.teacher, "calls", len(self.order) + len(self.not_annotated)),
                "kind": kind, "not_annotated": len(self.not_annotated)}

    def progress(self) -> dict[str, Any]:
        """The labels as the teacher gave them, for `restore` (a real LLM is not asked twice)."""
        return {"labeled": [[self.pool[i].id, [[s.start, s.end, s.label] for s in self.by_index[i].spans]]
                            for i in self.order],
                "not_annotated": [self.pool[i].id for i in sorted(self.not_annotated)],
                "teacher_calls": getattr(self.teacher, "calls", None)}

    def restore(self, progress: dict[str, Any]) -> None:
        index = {ex.id: i for i, ex in enumerate(self.pool)}
        for pid, spans in progress["labeled"]:
            i = index[pid]
            self.order.append(i)
            ex = self.pool[i]
            self.by_index[i] = Example(ex.id, ex.text, [Span(a, b, lab) for a, b, lab in spans], ex.tokens)
        self.not_annotated.update(index[pid] for pid in progress["not_annotated"])
        if hasattr(self.teacher, "calls"):
            self.teacher.calls = progress.get("teacher_calls", self.teacher.calls)


class AcquisitionLoop:
    """Rounds of train → evaluate on test → acquire → label, with progress saved after every round."""

    def __init__(self, cfg: SimulationConfig, data: SimulationData, train_cfg: Any) -> None:
        self.cfg, self.data, self.train_cfg = cfg, data, train_cfg
        self.labels = TeacherLabels(data.pool, make_teacher(cfg, data.pool, data.labels, data.gold))
        self.rounds: list[dict[str, Any]] = []
        self.final: dict[str, float] = {}
        self.cache_file = round0_cache_file(cfg) if cfg.rounds > 0 else None
        self.strategy: Any = None  # set by `run`, after the seed set is labeled

    def run(self) -> dict[str, Any] | None:
        """Every round; or, once `stop_at` labels are trained on, the record a staged run returns."""
        from acquisition import get_strategy

        cfg = self.cfg
        start_round = self._start()
        self.strategy = get_strategy(cfg.strategy)
        round_sizes = cfg.round_sizes()
        for r in range(start_round, cfg.rounds + 1):
            unlabeled = self.labels.unlabeled()
            pool_data = self._pool_data(r, unlabeled)
            if pool_data is None:
                break
            picked = select_round(self.strategy, pool_data, round_sizes[r], cfg.budget_unit,
                                  self.labels.texts(unlabeled), np.random.default_rng(cfg.seed + r + 1))
            self.labels.annotate([unlabeled[int(j)] for j in picked])
            save_progress(cfg, {"next_round": r + 1, "rounds": self.rounds, **self.labels.progress()})
            if cfg.stop_at is not None and self.rounds[-1]["labels"] >= cfg.stop_at:
                log.info("stopping at %d LLM labels (stop_at); resume continues from round %d", cfg.stop_at, r + 1)
                return {"stopped_at": self.rounds[-1]["labels"], "rounds": self.rounds}
        return None

    def _start(self) -> int:
        """The first round to run: 0 after labeling a random seed set, or where a saved run stopped."""
        progress = load_progress(self.cfg)
        if progress is None:
            order = np.random.default_rng(self.cfg.seed).permutation(len(self.data.pool))
            self.labels.annotate([int(i) for i in order[: self.cfg.seed_size]])
            return 0
        self.labels.restore(progress)
        self.rounds = progress["rounds"]
        self.final = {k: self.rounds[-1][k] for k in SCORES}
        log.info("resuming at round %d with %d LLM labels", progress["next_round"], len(self.labels.order))
        return int(progress["next_round"])

    def _pool_data(self, r: int, unlabeled: list[int]) -> Any:
        """What round r's student says about the pool, to select from; None after the last round.

        Round 0 comes from the shared cache when it is there, else the student is trained on the labels."""
        from acquisition.base import PoolData

        cached = self._cached_round0(r, unlabeled)
        if cached is not None:
            outputs, labeled_out = cached
            mc = None
        else:
            model = self._train(r)
            if r == self.cfg.rounds or not unlabeled:
                return None
            outputs = model.pool_outputs(self.labels.texts(unlabeled))
            labeled_out = model.pool_outputs(self.labels.texts(self.labels.order))
            mc = mc_outputs(self.strategy, model, self.labels.texts(unlabeled), self.cfg.seed + r)
            if r == 0 and self.cache_file:
                save_round0(self.cache_file, self.rounds[-1], [self.data.pool[i].id for i in unlabeled], outputs,
                            labeled_out)
        return PoolData(marginals=outputs.marginals, embeddings=outputs.embeddings,
                        ids=[self.data.pool[i].id for i in unlabeled], labeled_embeddings=labeled_out.embeddings,
                        mc_marginals=mc)

    def _cached_round0(self, r: int, unlabeled: list[int]) -> tuple[Any, Any] | None:
        """Round 0's pool outputs from the shared cache (its record appended), or None."""
        # A cached round 0 has no model to draw MC-dropout passes from: BALD trains it.
        if r != 0 or not self.cache_file or self.strategy.needs_mc_marginals:
            return None
        cached = load_round0(self.cache_file, [self.data.pool[i].id for i in unlabeled])
        if cached is None:
            return None
        record, outputs, labeled_out = cached
        self.final = {k: record[k] for k in SCORES}
        self.rounds.append({**record, **effort(self.labels.texts(self.labels.order)), "from_cache": True})
        log.info("round 0: %d LLM labels, test F1 %.4f (shared round 0 from %s)", len(self.labels.order),
                 self.final["f1"], self.cache_file)
        return outputs, labeled_out

    def _train(self, r: int) -> Any:
        """Train round r's student on the labels so far, record its round, return the model."""
        from training.trainer import split_meta_dev, train  # looked up at call time: tests stand a fake trainer in

        cpu_started = time.process_time()  # CPU time: what a round costs on a shared machine
        # Every recipe early-stops on the same held-out share of the verified set (docs/training.md).
        meta, dev = split_meta_dev(self.data.gold, self.train_cfg.dev_fraction, self.train_cfg.seed)
        result = train(self.labels.train_set(), meta, self.train_cfg, labels=self.data.labels,
                       encoder=self.cfg.encoder, dev_examples=dev)
        self.final = evaluate(result.model, self.data.test)
        order = self.labels.order
        self.rounds.append({"round": r, "labels": len(order), **self.final, **effort(self.labels.texts(order)),
                            "teacher_f1": float(self.labels.scores()["f1"]),
                            "best_epoch": result.metrics.get("best_epoch"), "epochs": result.metrics.get("epochs_run"),
                            "train_seconds": result.metrics.get("train_time_s"),
                            "cpu_seconds": round(time.process_time() - cpu_started, 1)})
        if result.sentence_weights:
            self.rounds[-1]["weights"] = weight_diagnostics(
                result.sentence_weights,
                {self.data.pool[i].id: same_spans(self.labels.by_index[i], self.data.pool[i]) for i in order},
                self.train_cfg.batch_size, result.metrics.get("skipped_zero_weight_batches", 0),
                result.metrics.get("steps", 0), result.sentence_positive_shares,
                {self.data.pool[i].id: bool(self.data.pool[i].spans) for i in order})
        log.info("round %d: %d LLM labels, test F1 %.4f", r, len(order), self.final["f1"])
        return result.model


def train_gold_only(cfg: SimulationConfig, data: SimulationData, train_cfg: Any
                    ) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, Any]]:
    """The baseline: the student on the gold set alone (no LLM labels, no acquisition, no reweighting)."""
    from training.trainer import split_meta_dev, train

    meta, dev = split_meta_dev(data.gold, train_cfg.dev_fraction, train_cfg.seed)  # early stopping on held-out gold
    result = train(meta, meta, dataclasses.replace(train_cfg, reweight=False), labels=data.labels,
                   encoder=cfg.encoder, dev_examples=dev)
    final = evaluate(result.model, data.test)
    rounds = [{"round": 0, "labels": 0, "gold": len(data.gold), **final, "train": result.metrics}]
    return rounds, final, {"f1": None, "precision": None, "recall": None, "labels": 0}


def run_simulation(cfg: SimulationConfig) -> dict[str, Any]:
    started = time.time()
    cfg.out.mkdir(parents=True, exist_ok=True)
    data = load_simulation_data(cfg)
    train_cfg = build_train_config(cfg)
    if cfg.gold_only:
        rounds, final, teacher_scores = train_gold_only(cfg, data, train_cfg)
    else:
        loop = AcquisitionLoop(cfg, data, train_cfg)
        stopped = loop.run()
        if stopped is not None:
            return stopped
        rounds, final, teacher_scores = loop.rounds, loop.final, loop.labels.summary(cfg.teacher_kind)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    # The values trained with (a recipe's, or LEGACY_TRAIN), where the report and the plot look for them.
    config.update(reweight=train_cfg.reweight, max_epochs=train_cfg.max_epochs, patience=train_cfg.patience)
    results = {"teacher": teacher_scores, "rounds": rounds, "final": final, "config": config,
               "train_config": asdict(train_cfg), "gold_size": len(data.gold), "pool_size": len(data.pool),
               "test_size": len(data.test), "seconds": round(time.time() - started, 1)}
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
