"""Train the student from the pretrained encoder on (noisy) labels, with a gold meta/dev set.

As in LLMaAA, the small gold set plays two roles: it is the meta set the reweighting aligns with
(batches drawn cyclically, reshuffled every cycle) and the dev set whose token-mean loss picks the
best epoch and stops training early. Every call starts again from the pretrained weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from training import reweight as rw
from training.data import Example, label_set, load_split, sample
from training.metrics import entity_scores
from training.model import IGNORE_INDEX, EncodedText, StudentTagger

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """LLMaAA's recipe (AdamW eps 1e-6, no weight decay, 6% warm-up then linear decay, clip 1.0,
    batch 8, keep the lowest-dev-loss epoch) with learning rates and epoch budget for MiniLM on a CPU.
    See docs/training.md for how the learning rates were chosen."""

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
    patience: int = 3  # epochs without a lower dev loss before stopping
    max_steps: int = 10_000  # cap on optimizer steps (as in the reference code)
    reweight: bool = True
    reweight_method: str = "jvp"  # "jvp" (exact closed form, fast) or "reference" (double backward)
    max_length: int = 256
    seed: int = 42

    def __post_init__(self) -> None:
        if self.reweight_method not in rw.METHODS:
            raise ValueError(f"reweight_method must be one of {rw.METHODS}, not {self.reweight_method!r}")
        if self.batch_size < 1 or self.meta_batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch sizes, max_epochs and patience must be positive")


@dataclass
class TrainResult:
    """The best-dev-loss model, a metrics dict, and per-sentence weights (reweighting only).

    `sentence_weights[id]` is the mean normalised weight (weights sum to 1 within each batch, so
    1/batch_size is "average") a training sentence got over all its steps; batches whose weights
    were all zero count as 0 for each member. Empty when `reweight=False`.
    """

    model: StudentTagger
    metrics: dict[str, Any]
    sentence_weights: dict[str, float] = field(default_factory=dict)
    sentence_weight_counts: dict[str, int] = field(default_factory=dict)


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


def _cyclic_batches(items: Sequence[EncodedText], size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Endless meta batches: each cycle is a fresh permutation of the whole meta set."""
    while True:
        perm = torch.randperm(len(items), generator=gen).tolist()
        for s in range(0, len(perm), size):
            yield perm[s : s + size]


def dev_loss_and_predictions(
    tagger: StudentTagger, examples: Sequence[Example], encoded: Sequence[EncodedText], batch_size: int
) -> tuple[float, list[list]]:
    """Token-mean CE on the dev set (word-initial subwords) and the predicted spans, from one pass."""
    texts = [ex.text for ex in examples]
    preds, pool = tagger.predict_and_pool(texts, batch_size=batch_size)
    total, count = 0.0, 0
    for enc, marg in zip(encoded, pool.marginals, strict=True):
        assert enc.labels is not None
        for w, pos in enumerate(enc.word_first):
            if pos >= 0 and enc.labels[pos] != IGNORE_INDEX:
                total -= math.log(max(float(marg[w, enc.labels[pos]]), 1e-12))
                count += 1
    return total / max(count, 1), preds


def train(
    train_examples: Sequence[Example],
    meta_examples: Sequence[Example],
    config: TrainConfig | None = None,
    labels: Sequence[str] | None = None,
    encoder: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a fresh student on `train_examples`; `meta_examples` (gold) are meta and dev set.

    `labels` are entity types (default: those in both sets); `encoder` a local checkpoint dir
    (default: `LLMAAA_ENCODER` or the packaged MiniLM).
    """
    config = config or TrainConfig()
    if not train_examples:
        raise ValueError("no training examples")
    if not meta_examples:
        raise ValueError("the gold meta/dev set is empty: it picks the best epoch and drives reweighting")
    started = time.perf_counter()
    seed_everything(config.seed)
    types = list(labels) if labels is not None else label_set([*train_examples, *meta_examples])
    tagger = StudentTagger.from_pretrained(types, encoder, max_length=config.max_length)
    model = tagger.model
    enc_train = tagger.encode_examples(train_examples)
    enc_meta = tagger.encode_examples(meta_examples)

    steps_per_epoch = math.ceil(len(enc_train) / config.batch_size)
    total_steps = min(steps_per_epoch * config.max_epochs, config.max_steps)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config), eps=config.adam_eps, weight_decay=config.weight_decay
    )
    scheduler = linear_warmup_decay(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    alphas = rw.step_sizes(model, config.encoder_lr, config.head_lr)
    gen = torch.Generator().manual_seed(config.seed)
    meta_stream = _cyclic_batches(enc_meta, config.meta_batch_size, gen)

    weight_sum: dict[str, float] = {}
    weight_count: dict[str, int] = {}
    dev_curve: list[float] = []
    dev_f1_curve: list[float] = []
    epoch_times: list[float] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    step, skipped, bad_epochs, stopped_early = 0, 0, 0, False

    for epoch in range(1, config.max_epochs + 1):
        if step >= total_steps:
            break
        epoch_start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(enc_train), generator=gen).tolist()
        bar = tqdm(total=min(steps_per_epoch, total_steps - step), desc=f"epoch {epoch}",
                   disable=not progress, leave=False, unit="step")
        for s in range(0, len(perm), config.batch_size):
            if step >= total_steps:
                break
            idx = perm[s : s + config.batch_size]
            batch = tagger.collate([enc_train[i] for i in idx])
            if config.reweight:
                meta_batch = tagger.collate([enc_meta[i] for i in next(meta_stream)])
                loss, weights = _reweighted_loss(model, batch, meta_batch, alphas, config.reweight_method)
                for i, w in zip(idx, weights.tolist(), strict=True):
                    ex_id = train_examples[i].id
                    weight_sum[ex_id] = weight_sum.get(ex_id, 0.0) + w
                    weight_count[ex_id] = weight_count.get(ex_id, 0) + 1
            else:
                loss = rw.token_mean_loss(model(**rw.model_inputs(batch)).logits, batch["labels"])
            if loss is None:
                # Every weight was zero: the batch contributes nothing (no optimizer step, whose
                # momentum would still move the weights), but the schedule advances.
                skipped += 1
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            bar.update(1)
            if loss is not None:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        epoch_times.append(time.perf_counter() - epoch_start)

        dev_loss, preds = dev_loss_and_predictions(tagger, meta_examples, enc_meta, config.eval_batch_size)
        f1 = entity_scores([ex.spans for ex in meta_examples], preds, [ex.text for ex in meta_examples])["f1"]
        dev_curve.append(dev_loss)
        dev_f1_curve.append(f1)
        log.info("epoch %d: dev loss %.4f, dev F1 %.4f", epoch, dev_loss, f1)
        if dev_loss < best_loss:
            best_loss, best_epoch, bad_epochs = dev_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                stopped_early = True
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    _, preds = dev_loss_and_predictions(tagger, meta_examples, enc_meta, config.eval_batch_size)
    dev = entity_scores([ex.spans for ex in meta_examples], preds, [ex.text for ex in meta_examples])
    metrics: dict[str, Any] = {
        "best_epoch": best_epoch,
        "epochs_run": len(dev_curve),
        "stopped_early": stopped_early,
        "steps": step,
        "skipped_zero_weight_batches": skipped,
        "dev_loss_curve": dev_curve,
        "dev_f1_curve": dev_f1_curve,
        "best_dev_loss": best_loss,
        "dev_precision": dev["precision"],
        "dev_recall": dev["recall"],
        "dev_f1": dev["f1"],
        "dev_per_type": dev["per_type"],
        "train_time_s": time.perf_counter() - started,
        "epoch_train_s": epoch_times,  # optimizer steps only, without the dev evaluation
        "n_train": len(train_examples),
        "n_meta": len(meta_examples),
        "labels": tagger.labels,
        "config": asdict(config),
    }
    weights = {k: weight_sum[k] / weight_count[k] for k in weight_sum}
    return TrainResult(tagger, metrics, weights, weight_count)


def _reweighted_loss(
    model: torch.nn.Module,
    batch: rw.Batch,
    meta_batch: rw.Batch,
    alphas: dict[str, float],
    method: str,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The weighted real-step loss Σ wᵢ ℓᵢ (None when every weight is 0) and the weights."""
    if method == "jvp":
        tangent = rw.meta_tangent(model, meta_batch, alphas)  # eval mode, no dropout
        model.train()
        # One train-mode forward yields the real-step losses and their alignments together.
        losses, alignments = rw.losses_and_alignments(model, batch, tangent)
        weights = rw.normalise_weights(alignments)
    else:
        weights = rw.reference_weights(model, batch, meta_batch, alphas)
        if weights.sum() <= 0:
            return None, weights
        model.train()
        losses = rw.per_sentence_losses(model(**rw.model_inputs(batch)).logits, batch["labels"])
    if weights.sum() <= 0:
        return None, weights
    return (weights * losses).sum(), weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m training.trainer` (also reusable by a CLI subcommand)."""
    d = TrainConfig()
    parser.add_argument("--train", required=True, type=Path, help="training .jsonl (tokens + IOB2 tags)")
    parser.add_argument("--meta", required=True, type=Path, help="gold meta/dev .jsonl")
    parser.add_argument("--train-limit", type=int, default=None, help="random sample of this many")
    parser.add_argument("--meta-limit", type=int, default=None, help="random sample of this many")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--encoder", default=None, help="local HF checkpoint dir (default: MiniLM)")
    parser.add_argument("--encoder-lr", type=float, default=d.encoder_lr)
    parser.add_argument("--head-lr", type=float, default=d.head_lr)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--meta-batch-size", type=int, default=d.meta_batch_size)
    parser.add_argument("--epochs", type=int, default=d.max_epochs)
    parser.add_argument("--patience", type=int, default=d.patience)
    parser.add_argument("--no-reweight", dest="reweight", action="store_false")
    parser.add_argument("--reweight-method", choices=rw.METHODS, default=d.reweight_method)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--store", type=Path, default=None, help="save the model into this ModelStore root")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> dict[str, Any]:
    train_set = sample(load_split(args.train), args.train_limit, args.sample_seed)
    meta_set = sample(load_split(args.meta), args.meta_limit, args.sample_seed)
    config = TrainConfig(
        encoder_lr=args.encoder_lr, head_lr=args.head_lr, batch_size=args.batch_size,
        meta_batch_size=args.meta_batch_size, max_epochs=args.epochs, patience=args.patience,
        reweight=args.reweight, reweight_method=args.reweight_method, seed=args.seed,
    )
    result = train(train_set, meta_set, config, encoder=args.encoder, progress=args.progress)
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
