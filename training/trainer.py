"""Train the student from the pretrained encoder on (noisy) labels, with a gold meta/dev set.

As in LLMaAA, the small gold set is the meta set the reweighting aligns with, and by default also
the dev set that picks the best epoch (entity F1 by default, or the token-mean loss) and stops
training early. A gold term trains on the meta set, so its run early-stops on verified sentences it
does not train on: a `dev_examples` set the caller gives, else a seeded `dev_fraction` of the meta set
held out. Every call starts again from the pretrained weights.

The reweighting recipe (docs/training.md) is a set of `TrainConfig` options on top of Ren et al.'s
L2RW: plain warm-up epochs, a mix w = (1 − α)·uniform + α·L2RW with α ramped up, the meta gradient
over the whole verified set, a uniform fallback for all-zero batches, a gold term, and per-token
weights. `RECIPES` names presets of them; `TrainConfig.from_recipe` builds one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from training import reweight as rw
from training.data import Example, label_set, load_split, sample
from training.device import DEVICES, mixed_precision, resolve_device
from training.metrics import entity_scores
from training.model import IGNORE_INDEX, EncodedText, StudentTagger

log = logging.getLogger(__name__)

EARLY_STOPS: tuple[str, ...] = ("f1", "loss")
ZERO_FALLBACKS: tuple[str, ...] = ("skip", "uniform")
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainConfig:
    """LLMaAA's recipe (AdamW eps 1e-6, no weight decay, 6% warm-up then linear decay, clip 1.0,
    batch 8) with learning rates and epoch budget for MiniLM on a CPU, plus the reweighting
    recipe's options. The recipe options' defaults are plain L2RW as before; see docs/training.md."""

    encoder_lr: float = 1e-4
    head_lr: float = 1e-3
    adam_eps: float = 1e-6
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    batch_size: int = 8
    meta_batch_size: int = 8
    eval_batch_size: int = 32
    max_epochs: int = 20
    patience: int = 3  # epochs without a better dev score before stopping
    max_steps: int = 10_000  # cap on optimizer steps (as in the reference code)
    reweight: bool = True
    reweight_method: str = "jvp"  # "jvp" (exact closed form, fast) or "reference" (double backward)
    max_length: int = 256
    seed: int = 42
    # Model selection: "f1" (entity F1 on the meta/dev set; ties → lower loss) or "loss" (token-mean CE).
    early_stop: str = "f1"
    # The reweighting recipe. Defaults = plain L2RW from the first step.
    warmup_epochs: int = 0  # plain epochs before reweighting starts
    mix_alpha: float = 1.0  # final α in w = (1 − α)·uniform + α·L2RW (0 = plain training)
    mix_ramp_epochs: int = 0  # α rises linearly, step by step, from 0 to mix_alpha over these epochs
    meta_full: bool = False  # meta gradient over the whole verified set (accumulated), not one batch
    meta_every: int = 1  # recompute the meta gradient every k steps and reuse it in between
    zero_fallback: str = "skip"  # an all-zero L2RW batch: "skip" it, or train on it "uniform"ly
    gold_weight: float = 0.0  # > 0: add gold_weight × the verified sentences' loss to every step
    # With a gold term and no dev set given, this share of the meta set (by seeded id hash) is held out for
    # early stopping: on the sentences the gold term trains on, dev F1 reaches 0.99-1.0 within a few epochs
    # and the run goes to the epoch cap (converged grid, bc5cdr-chatgpt-systematic-recipe-s1, 100 and 300 labels).
    dev_fraction: float = 0.3
    weight_granularity: str = "sentence"  # "sentence" or "token" (each labelled token its own weight)
    # Execution: none of these changes what is computed, only where and how fast.
    device: str = "auto"  # "auto" (STUDENT_DEVICE, else CUDA when available), "cpu" or "cuda"
    mixed_precision: bool = True  # bf16 autocast on CUDA only
    bucket_batches: bool = True  # length-bucketed batches: little padding, same epoch size
    progress_every: int = 10  # steps between progress_callback calls

    def __post_init__(self) -> None:
        _check_choice("reweight_method", self.reweight_method, rw.METHODS)
        _check_choice("early_stop", self.early_stop, EARLY_STOPS)
        _check_choice("zero_fallback", self.zero_fallback, ZERO_FALLBACKS)
        _check_choice("weight_granularity", self.weight_granularity, rw.GRANULARITIES)
        _check_choice("device", self.device, DEVICES)
        if self.batch_size < 1 or self.meta_batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch sizes, max_epochs and patience must be positive")
        if self.warmup_epochs < 0 or self.mix_ramp_epochs < 0 or self.meta_every < 1 or self.progress_every < 1:
            raise ValueError("warmup_epochs and mix_ramp_epochs must be ≥ 0, meta_every and progress_every ≥ 1")
        if not 0.0 <= self.mix_alpha <= 1.0:
            raise ValueError(f"mix_alpha must be in [0, 1], not {self.mix_alpha}")
        if self.gold_weight < 0:
            raise ValueError(f"gold_weight must be ≥ 0, not {self.gold_weight}")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), not {self.dev_fraction}")
        if self.reweight_method == "reference" and (
            self.weight_granularity != "sentence" or self.meta_full or self.meta_every != 1
        ):
            raise ValueError("reweight_method 'reference' supports only sentence weights from one fresh meta batch")

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> TrainConfig:
        """The preset `name` of `RECIPES`, with `overrides` on top (unknown fields raise TypeError)."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**{**RECIPES[name], **overrides})


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, not {value!r}")


# Named TrainConfig overrides. "recipe" is the robust-reweighting first guess from a one-seed sanity
# check (docs/training.md), to be confirmed or replaced by the converged grid.
RECIPES: dict[str, dict[str, Any]] = {
    "plain": {"reweight": False},
    "plain_gold": {"reweight": False, "gold_weight": 0.5},  # the baseline the gold term must be judged against
    "l2rw": {"reweight": True},
    "recipe": {
        "reweight": True,
        "warmup_epochs": 2,
        "mix_alpha": 0.5,
        "mix_ramp_epochs": 2,
        "meta_full": False,
        "meta_every": 4,  # ≤ 2× a plain step (benchmarks/reweight_cost.py); the direction is ≤ 3 steps old
        "zero_fallback": "uniform",
        "gold_weight": 0.5,
        "weight_granularity": "sentence",
    },
}


@dataclass
class TrainResult:
    """The best-epoch model, a metrics dict, and per-sentence weights (reweighting only).

    `sentence_weights[id]` is the mean normalised L2RW weight (weights sum to 1 within each batch,
    so 1/batch_size is "average"; per-token weights are summed over the sentence's tokens) a
    training sentence got over its reweighted steps, before any mix or fallback; batches whose
    weights were all zero count as 0 for each member. Empty when no step was reweighted.

    `sentence_positive_shares[id]` is the share of those steps in which the sentence's weight was
    positive: the meta gradient's vote for it, whatever the size of the weight. The size grows with
    the sentence's gradient, so mean weights favour high-loss sentences, which under a noisy teacher
    are mostly the wrong ones (benchmarks/weight_auc.py; docs/training.md).
    """

    model: StudentTagger
    metrics: dict[str, Any]
    sentence_weights: dict[str, float] = field(default_factory=dict)
    sentence_weight_counts: dict[str, int] = field(default_factory=dict)
    sentence_positive_shares: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)  # never exactly 0, so the first step does move
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(optimizer, factor)


def _param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Encoder (`model.base_model`) and head parameters with their own learning rates."""
    encoder = rw.encoder_param_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in encoder], "lr": config.encoder_lr},
        {"params": [p for n, p in named if n not in encoder], "lr": config.head_lr},
    ]


def epoch_batches(lengths: Sequence[int], size: int, gen: torch.Generator, bucket: bool = True,
                  pool_batches: int = 8) -> list[list[int]]:
    """One epoch of batches (indices). Bucketed: shuffle, sort each pool of `pool_batches` batches
    by length, cut it into batches, shuffle the batch order, so a batch pads to nearly no waste but
    its members still change every epoch. The batch count is that of plain shuffling.

    Pools of 8 batches: on 500 BC5CDR sentences at batch 8, padded tokens per real token drop from
    1.83 (shuffled) to 1.19 (16 batches: 1.10, 4: 1.31); smaller pools keep batches more random."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    if not bucket:
        return [perm[s : s + size] for s in range(0, len(perm), size)]
    pool = size * pool_batches
    batches: list[list[int]] = []
    for s in range(0, len(perm), pool):
        chunk = sorted(perm[s : s + pool], key=lengths.__getitem__)  # stable: ties keep the shuffle
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _cyclic_batches(n: int, size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Endless meta batches: each cycle is a fresh shuffle of the whole meta set. Not length-bucketed:
    on a 100-sentence set that would fix which sentences share a meta batch, and the meta gradient
    is worth its diversity (its cost is amortised by `meta_every` instead)."""
    while True:
        perm = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n, size):
            yield perm[s : s + size]


def dev_loss_and_predictions(
    tagger: StudentTagger, examples: Sequence[Example], encoded: Sequence[EncodedText], batch_size: int
) -> tuple[float, list[list]]:
    """Token-mean CE on the dev set (word-initial subwords) and the predicted spans, from one pass
    over the already tokenised `encoded` (no re-tokenising, no embeddings)."""
    marginals, _ = tagger.infer_encoded(encoded, batch_size)
    total, count = 0.0, 0
    for enc, marg in zip(encoded, marginals, strict=True):
        assert enc.labels is not None
        for w, pos in enumerate(enc.word_first):
            if pos >= 0 and enc.labels[pos] != IGNORE_INDEX:
                total -= math.log(max(float(marg[w, enc.labels[pos]]), 1e-12))
                count += 1
    preds = [tagger.decode(ex.text, m) for ex, m in zip(examples, marginals, strict=True)]
    return total / max(count, 1), preds


def mix_alpha_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """α of the weight mix at optimizer step `step` (0-based): 0 without reweighting and during the
    warm-up epochs, then a linear per-step ramp to `mix_alpha` over `mix_ramp_epochs` epochs."""
    if not config.reweight:
        return 0.0
    since = step - config.warmup_epochs * steps_per_epoch
    if since < 0:
        return 0.0
    ramp = config.mix_ramp_epochs * steps_per_epoch
    if ramp <= 0:
        return config.mix_alpha
    return config.mix_alpha * min(1.0, (since + 1) / ramp)


def split_meta_dev(examples: Sequence[Example], dev_fraction: float,
                   seed: int) -> tuple[list[Example], list[Example]]:
    """(meta, dev): round(dev_fraction × n) of the n distinct ids of `examples` held out as dev.

    Ids are ranked by a hash of (seed, id), so the split does not depend on the examples' order, the same
    seed gives the same split, and a grown set keeps most ids on their side. Examples that share an id stay
    together. Raises ValueError when either part would be empty.
    """
    ids = list(dict.fromkeys(ex.id for ex in examples))
    n_dev = math.floor(dev_fraction * len(ids) + 0.5)  # half up (round() would send 0.5 to 0)
    if not 0 < n_dev < len(ids):
        raise ValueError(f"holding out {dev_fraction:g} of {len(ids)} verified sentence(s) for early stopping leaves "
                         f"{'no dev' if n_dev == 0 else 'no meta'} sentence: give more verified sentences, another "
                         "dev_fraction, or a dev set of its own")

    def rank(ex_id: str) -> bytes:
        return hashlib.blake2b(f"{seed}:{ex_id}".encode(), digest_size=8).digest()

    dev_ids = set(sorted(ids, key=rank)[:n_dev])
    return [ex for ex in examples if ex.id not in dev_ids], [ex for ex in examples if ex.id in dev_ids]


def early_stopping_sets(train_examples: Sequence[Example], meta_examples: Sequence[Example],
                        dev_examples: Sequence[Example] | None,
                        config: TrainConfig) -> tuple[list[Example], list[Example]]:
    """(meta, dev) of one run. Dev is `dev_examples` when given; else, when the gold term trains on the meta
    set, its held-out `dev_fraction`; else the meta set itself (L2RW only aligns with it, as in LLMaAA).

    A dev set that shares ids with the meta set under a gold term is refused; one that shares ids with the
    training examples is the caller's choice, logged as a warning.
    """
    meta = list(meta_examples)
    if dev_examples is None:
        meta, dev = split_meta_dev(meta, config.dev_fraction, config.seed) if config.gold_weight > 0 else (meta, meta)
    else:
        dev = list(dev_examples)
        if not dev:
            raise ValueError("the dev set is empty: it picks the best epoch and stops training")
        shared = {ex.id for ex in dev} & {ex.id for ex in meta}
        if config.gold_weight > 0 and shared:
            raise ValueError(f"{len(shared)} dev sentence(s) are also in the meta set, which the gold term trains "
                             "on: early stopping on them selects by a training loss")
    trained_on = {ex.id for ex in dev} & {ex.id for ex in train_examples}
    if trained_on:
        log.warning("%d of %d dev sentence(s) are also training examples: early stopping sees sentences "
                    "the student trains on", len(trained_on), len(dev))
    return meta, dev


class _Trainer:
    """The state of one `train()` call; every method is one stage of the loop."""

    def __init__(self, tagger: StudentTagger, train_examples: Sequence[Example], meta_examples: Sequence[Example],
                 config: TrainConfig, device: torch.device, dev_examples: Sequence[Example] | None = None) -> None:
        self.tagger, self.model, self.config, self.device = tagger, tagger.model, config, device
        self.train_examples, self.meta_examples = train_examples, meta_examples
        self.enc_train = tagger.encode_examples(train_examples)  # tokenised once for every epoch
        self.enc_meta = tagger.encode_examples(meta_examples)
        # The early-stopping set: the meta set itself unless another is given.
        self.dev_examples = meta_examples if dev_examples is None else dev_examples
        self.enc_dev = self.enc_meta if dev_examples is None else tagger.encode_examples(dev_examples)
        self.train_lengths = [len(e) for e in self.enc_train]
        self.steps_per_epoch = math.ceil(len(self.enc_train) / config.batch_size)
        self.total_steps = min(self.steps_per_epoch * config.max_epochs, config.max_steps)
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, config), eps=config.adam_eps,
                                           weight_decay=config.weight_decay)
        self.scheduler = linear_warmup_decay(self.optimizer, int(config.warmup_ratio * self.total_steps),
                                             self.total_steps)
        self.alphas = rw.step_sizes(self.model, config.encoder_lr, config.head_lr)
        self.gen = torch.Generator().manual_seed(config.seed)
        # The meta stream has its own generator: the training order is the same with or without it.
        self.meta_stream = _cyclic_batches(len(self.enc_meta), config.meta_batch_size,
                                           torch.Generator().manual_seed(config.seed + 1))
        self.meta_grad: dict[str, torch.Tensor] | None = None
        self.tangent: dict[str, torch.Tensor] | None = None
        self.meta_step = -1
        self.meta_computations = 0
        self.epoch = 0
        self.step = 0
        self.skipped = 0
        self.weight_sum: dict[str, float] = {}
        self.weight_count: dict[str, int] = {}
        self.positive_count: dict[str, int] = {}

    def notify(self, phase: str, callback: ProgressCallback | None) -> None:
        if callback is not None:
            callback({"epoch": self.epoch, "max_epochs": self.config.max_epochs, "step": self.step,
                      "total_steps": self.total_steps, "phase": phase})

    def collate(self, items: Sequence[EncodedText]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.tagger.collate(items).items()}

    # ------------------------------------------------------------------------------- meta gradient
    def _meta_batches(self) -> list[dict[str, torch.Tensor]]:
        if not self.config.meta_full:
            return [self.collate([self.enc_meta[i] for i in next(self.meta_stream)])]
        if not hasattr(self, "_full_meta"):  # the whole verified set, length-sorted, collated once
            order = sorted(range(len(self.enc_meta)), key=lambda i: len(self.enc_meta[i]))
            size = self.config.eval_batch_size
            self._full_meta = [self.collate([self.enc_meta[i] for i in order[s : s + size]])
                               for s in range(0, len(order), size)]
        return self._full_meta

    def refresh_meta(self) -> None:
        """Recompute ∇θ L_meta (and the tangent α ⊙ ∇θ L_meta) when `meta_every` steps have passed."""
        if self.tangent is not None and self.step - self.meta_step < self.config.meta_every:
            return
        with mixed_precision(self.device, self.config.mixed_precision):
            grad = rw.meta_gradient(self.model, self._meta_batches())
        # The gold term needs the raw gradient; otherwise it is scaled into the tangent in place.
        self.meta_grad = grad if self.config.gold_weight > 0 else None
        self.tangent = {n: g * self.alphas[n] if self.meta_grad is not None else g.mul_(self.alphas[n])
                        for n, g in grad.items()}
        self.meta_step = self.step
        self.meta_computations += 1

    # -------------------------------------------------------------------------------------- a step
    def _plain_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with mixed_precision(self.device, self.config.mixed_precision):
            logits = self.model(**rw.model_inputs(batch)).logits
        return rw.token_mean_loss(logits, batch["labels"])

    def _reweighted_loss(self, batch: dict[str, torch.Tensor], alpha: float,
                         idx: Sequence[int]) -> torch.Tensor | None:
        """Σ w ⊙ ℓ with w = mix(L2RW or its fallback, uniform, α); None when every weight is 0."""
        cfg, labels = self.config, batch["labels"]
        if cfg.reweight_method == "reference":
            meta_batch = self._meta_batches()[0]
            l2rw = rw.reference_weights(self.model, batch, meta_batch, self.alphas)
            self.model.train()
            with mixed_precision(self.device, cfg.mixed_precision):
                losses = rw.per_sentence_losses(self.model(**rw.model_inputs(batch)).logits, labels)
        else:
            self.refresh_meta()
            assert self.tangent is not None
            self.model.train()
            # One train-mode forward yields the real-step losses and their alignments together.
            with mixed_precision(self.device, cfg.mixed_precision):
                losses, alignments = rw.losses_and_alignments(self.model, batch, self.tangent,
                                                              cfg.weight_granularity)
            mask = labels != IGNORE_INDEX if cfg.weight_granularity == "token" else None
            l2rw = rw.normalise_weights(alignments, mask)
        self._record(idx, rw.sentence_totals(l2rw))
        uniform = rw.uniform_weights(labels, cfg.weight_granularity).to(l2rw.dtype)
        if cfg.zero_fallback == "uniform" and not bool(l2rw.any()):
            l2rw = uniform
        weights = rw.mix_weights(l2rw, uniform, alpha)
        if not bool(weights.any()):
            return None
        return (weights * losses).sum()

    def _record(self, idx: Sequence[int], per_sentence: torch.Tensor) -> None:
        for i, w in zip(idx, per_sentence.tolist(), strict=True):
            ex_id = self.train_examples[i].id
            self.weight_sum[ex_id] = self.weight_sum.get(ex_id, 0.0) + w
            self.weight_count[ex_id] = self.weight_count.get(ex_id, 0) + 1
            self.positive_count[ex_id] = self.positive_count.get(ex_id, 0) + (w > 0)

    def train_step(self, idx: Sequence[int]) -> float | None:
        """One optimizer step on the batch `idx`; the loss, or None when the batch was skipped."""
        cfg = self.config
        batch = self.collate([self.enc_train[i] for i in idx])
        alpha = mix_alpha_at(cfg, self.step, self.steps_per_epoch)
        if alpha > 0:
            loss = self._reweighted_loss(batch, alpha, idx)
        else:
            self.model.train()
            loss = self._plain_loss(batch)
        if cfg.gold_weight > 0:
            self.refresh_meta()  # the gold term's gradient is the (dropout-free) meta gradient
        if loss is None:
            # Every weight was zero: the batch contributes nothing (no optimizer step, whose
            # momentum would still move the weights, unless a gold term remains), but the
            # schedule advances.
            self.skipped += 1
        else:
            loss.backward()
        stepped = self._add_gold_gradient() or loss is not None
        if stepped:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return None if loss is None else float(loss.detach())

    def _add_gold_gradient(self) -> bool:
        """Add gold_weight × ∇θ L_meta to the gradients (the gold term); True if it was added."""
        if self.config.gold_weight <= 0 or self.meta_grad is None:
            return False
        for name, p in self.model.named_parameters():
            g = self.meta_grad.get(name)
            if g is None:
                continue
            if p.grad is None:
                p.grad = g * self.config.gold_weight
            else:
                p.grad.add_(g, alpha=self.config.gold_weight)
        return True

    # ------------------------------------------------------------------------------------- evaluate
    def evaluate(self) -> tuple[float, dict[str, Any]]:
        """Dev token-mean loss and entity scores of the current weights."""
        loss, preds = dev_loss_and_predictions(self.tagger, self.dev_examples, self.enc_dev,
                                               self.config.eval_batch_size)
        scores = entity_scores([ex.spans for ex in self.dev_examples], preds,
                               [ex.text for ex in self.dev_examples])
        return loss, scores


def _is_better(config: TrainConfig, loss: float, f1: float, best: tuple[float, float] | None) -> bool:
    """Does (loss, f1) beat the best so far? By F1 with ties going to the lower loss, or by loss."""
    if best is None:
        return True
    best_loss, best_f1 = best
    if config.early_stop == "loss":
        return loss < best_loss
    return f1 > best_f1 or (f1 == best_f1 and loss < best_loss)


@dataclass
class _Selection:
    """Best epoch so far and the early-stopping counters."""

    best: tuple[float, float] | None = None  # (loss, f1)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_scores: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    loss_curve: list[float] = field(default_factory=list)
    f1_curve: list[float] = field(default_factory=list)

    def update(self, run: _Trainer, epoch: int, loss: float, scores: dict[str, Any]) -> bool:
        """Record the epoch's dev scores; keep its weights if best. True means: stop now."""
        cfg = run.config
        self.loss_curve.append(loss)
        self.f1_curve.append(scores["f1"])
        if _is_better(cfg, loss, scores["f1"], self.best):
            self.best, self.best_epoch, self.best_scores, self.bad_epochs = (loss, scores["f1"]), epoch, scores, 0
            self.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
            return False
        # Warm-up epochs never stop the run: reweighting must get its chance.
        if not (cfg.reweight and epoch <= cfg.warmup_epochs):
            self.bad_epochs += 1
        if self.bad_epochs >= cfg.patience:
            self.stopped_early = True
        return self.stopped_early


def _run_epoch(run: _Trainer, progress: bool, callback: ProgressCallback | None) -> float:
    """One pass over the training set; returns its wall time (optimizer steps only)."""
    cfg = run.config
    started = time.perf_counter()
    batches = epoch_batches(run.train_lengths, cfg.batch_size, run.gen, cfg.bucket_batches)
    bar = tqdm(total=min(len(batches), run.total_steps - run.step), desc=f"epoch {run.epoch}",
               disable=not progress, leave=False, unit="step")
    run.notify("train", callback)
    for idx in batches:
        if run.step >= run.total_steps:
            break
        loss = run.train_step(idx)
        bar.update(1)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}")
        if run.step % cfg.progress_every == 0:
            run.notify("train", callback)
    bar.close()
    return time.perf_counter() - started


def train(
    train_examples: Sequence[Example],
    meta_examples: Sequence[Example],
    config: TrainConfig | None = None,
    labels: Sequence[str] | None = None,
    encoder: str | Path | None = None,
    progress: bool = True,
    progress_callback: ProgressCallback | None = None,
    dev_examples: Sequence[Example] | None = None,
) -> TrainResult:
    """Fine-tune a fresh student on `train_examples`, reweighted against `meta_examples` (gold).

    Early stopping and model selection use `dev_examples` (gold) when given; without them the meta set,
    except that a gold term (`gold_weight` > 0) trains on the meta set, so a seeded `config.dev_fraction`
    of it is held out as dev instead (`early_stopping_sets`). `labels` are entity types (default: those in
    the sets); `encoder` a local checkpoint dir (default: `LLMAAA_ENCODER` or the packaged MiniLM).
    `progress_callback` receives {"epoch", "max_epochs", "step", "total_steps", "phase"} ("train" at the
    start of each epoch and every `config.progress_every` steps, "evaluate" after each epoch's dev pass,
    "done" at the end).
    """
    config = config or TrainConfig()
    if not train_examples:
        raise ValueError("no training examples")
    if not meta_examples:
        raise ValueError("the gold meta set is empty: it drives reweighting (and, without a dev set, early stopping)")
    meta_examples, dev = early_stopping_sets(train_examples, meta_examples, dev_examples, config)
    started = time.perf_counter()
    device = resolve_device(config.device)  # before any work: a missing GPU fails fast
    seed_everything(config.seed)
    types = list(labels) if labels is not None else label_set([*train_examples, *meta_examples, *dev])
    tagger = StudentTagger.from_pretrained(types, encoder, max_length=config.max_length, device=device)
    run = _Trainer(tagger, train_examples, meta_examples, config, device, None if dev is meta_examples else dev)
    sel, epoch_times = _Selection(), []
    while run.epoch < config.max_epochs and run.step < run.total_steps:
        run.epoch += 1
        epoch_times.append(_run_epoch(run, progress, progress_callback))
        dev_loss, scores = run.evaluate()
        log.info("epoch %d: dev loss %.4f, dev F1 %.4f", run.epoch, dev_loss, scores["f1"])
        stop = sel.update(run, run.epoch, dev_loss, scores)
        run.notify("evaluate", progress_callback)
        if stop:
            break
    if sel.best_state is not None:
        run.model.load_state_dict(sel.best_state)
    run.model.eval()
    run.notify("done", progress_callback)
    return _result(run, sel, epoch_times, time.perf_counter() - started)


def _result(run: _Trainer, sel: _Selection, epoch_times: list[float], elapsed: float) -> TrainResult:
    dev = sel.best_scores
    metrics: dict[str, Any] = {
        "best_epoch": sel.best_epoch,
        "epochs_run": len(sel.loss_curve),
        "stopped_early": sel.stopped_early,
        "early_stop": run.config.early_stop,
        "steps": run.step,
        "skipped_zero_weight_batches": run.skipped,
        "meta_computations": run.meta_computations,
        "dev_loss_curve": sel.loss_curve,
        "dev_f1_curve": sel.f1_curve,
        "best_dev_loss": sel.best[0] if sel.best else math.inf,
        "dev_precision": dev.get("precision", 0.0),
        "dev_recall": dev.get("recall", 0.0),
        "dev_f1": dev.get("f1", 0.0),
        "dev_per_type": dev.get("per_type", {}),
        "train_time_s": elapsed,
        "epoch_train_s": epoch_times,  # optimizer steps only, without the dev evaluation
        "n_train": len(run.train_examples),
        "n_meta": len(run.meta_examples),
        "n_dev": len(run.dev_examples),
        "dev_is_meta": run.dev_examples is run.meta_examples,  # early stopping on the meta set (no gold term)
        "labels": run.tagger.labels,
        "device": str(run.device),
        "config": asdict(run.config),
    }
    weights = {k: run.weight_sum[k] / run.weight_count[k] for k in run.weight_sum}
    positive_shares = {k: run.positive_count[k] / run.weight_count[k] for k in run.weight_count}
    return TrainResult(run.tagger, metrics, weights, dict(run.weight_count), positive_shares)


# Options of the CLI that map one-to-one onto TrainConfig fields (flag → field).
_CLI_FIELDS = {
    "encoder_lr": float, "head_lr": float, "batch_size": int, "meta_batch_size": int, "patience": int,
    "seed": int, "early_stop": str, "warmup_epochs": int, "mix_alpha": float, "mix_ramp_epochs": int,
    "meta_every": int, "zero_fallback": str, "gold_weight": float, "weight_granularity": str, "device": str,
    "dev_fraction": float,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m training.trainer` (also reusable by a CLI subcommand)."""
    parser.add_argument("--train", required=True, type=Path, help="training .jsonl (tokens + IOB2 tags)")
    parser.add_argument("--meta", required=True, type=Path, help="gold meta .jsonl (also the dev set without --dev)")
    parser.add_argument("--dev", type=Path, default=None,
                        help="gold early-stopping .jsonl (default: the meta set, or its held-out --dev-fraction "
                             "with a gold term)")
    parser.add_argument("--train-limit", type=int, default=None, help="random sample of this many")
    parser.add_argument("--meta-limit", type=int, default=None, help="random sample of this many")
    parser.add_argument("--dev-limit", type=int, default=None, help="random sample of this many")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--encoder", default=None, help="local HF checkpoint dir (default: MiniLM)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="l2rw",
                        help="preset of the options below (default: l2rw); explicit options override it")
    for name, kind in _CLI_FIELDS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"TrainConfig.{name} (default: the recipe's, else {getattr(TrainConfig, name)})")
    parser.add_argument("--epochs", type=int, default=None, help=f"max epochs (default {TrainConfig.max_epochs})")
    parser.add_argument("--no-reweight", dest="reweight", action="store_const", const=False, default=None)
    parser.add_argument("--meta-full", action="store_const", const=True, default=None)
    parser.add_argument("--no-bucket", dest="bucket_batches", action="store_const", const=False, default=None)
    parser.add_argument("--reweight-method", choices=rw.METHODS, default=None)
    parser.add_argument("--store", type=Path, default=None, help="save the model into this ModelStore root")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe preset with every explicitly given option on top."""
    names = [*_CLI_FIELDS, "reweight", "meta_full", "bucket_batches", "reweight_method"]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    return TrainConfig.from_recipe(args.recipe, **overrides)


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = config_from_args(args)  # bad options fail before any data is read
    train_set = sample(load_split(args.train), args.train_limit, args.sample_seed)
    meta_set = sample(load_split(args.meta), args.meta_limit, args.sample_seed)
    dev_set = None if args.dev is None else sample(load_split(args.dev), args.dev_limit, args.sample_seed)
    result = train(train_set, meta_set, config, encoder=args.encoder, progress=args.progress, dev_examples=dev_set)
    summary = {k: v for k, v in result.metrics.items() if k not in ("dev_per_type", "config", "labels")}
    if args.store is not None:
        from training.store import ModelStore

        summary["version"] = ModelStore(args.store).save(
            result.model, result.metrics, result.sentence_weights, {"train": str(args.train)}
        )
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.trainer", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(parser.parse_args(argv)), indent=2))


if __name__ == "__main__":
    main()
