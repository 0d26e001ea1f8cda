"""Do the learned L2RW weights favour correct LLM labels? A controlled check on a small BC5CDR slice.

    LLMAAA_TORCH_THREADS=1 .venv/bin/python benchmarks/weight_auc.py --pool 160 --gold 48 --epochs 6

One random train sample (`--pool`) is labelled three ways: (a) `flip`: a random `--flip-share` of the
sentences with entities get every span's type swapped (Chemical <-> Disease), the rest are gold; (b)
`random` and (c) `systematic`: `llmaaa.simulation` noise at the ChatGPT-like calibration. Each labelling
trains the `recipe` preset (2 plain epochs, then the α-mix; early stopping off) with and without the
gold term. Every reweighted step's per-sentence alignment ⟨α ⊙ ∇L_meta, ∇ℓᵢ⟩, normalised L2RW weight and
loss are recorded. Reported per run (a label is correct when its spans equal the gold spans):
- `auc_weight`: AUC of the mean weight, correct > wrong (what `llmaaa simulate` reports);
- `auc_weight_with_entities`: the same among sentences with at least one gold entity;
- `auc_positive_share`: AUC of the share of steps with a positive alignment (the meta gradient's vote,
  without the gradient's magnitude);
- `auc_low_loss`: AUC of the negated mean loss (how well the loss alone separates correct from wrong);
- `spearman_weight_loss`: rank correlation of mean weight and mean loss.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DATA, RESULTS, write_result  # noqa: E402
from training.data import Example  # noqa: E402
from training.spans import Span  # noqa: E402

NOISE_KINDS = ("flip", "random", "systematic")
CHATGPT_NOISE = {"random": 0.298, "systematic": 0.341}  # llmaaa.simulation.noise.CALIBRATED_NOISE (BC5CDR)


def flipped_labels(pool: list[Example], share: float, seed: int) -> list[Example]:
    """Swap Chemical <-> Disease on every span of a random `share` of the sentences that have entities."""
    swap = {"Chemical": "Disease", "Disease": "Chemical"}
    with_entities = [i for i, ex in enumerate(pool) if ex.spans]
    chosen = set(random.Random(seed).sample(with_entities, round(share * len(with_entities))))
    return [Example(ex.id, ex.text, [Span(s.start, s.end, swap.get(s.label, s.label)) for s in ex.spans], ex.tokens)
            if i in chosen else ex for i, ex in enumerate(pool)]


def simulated_labels(pool: list[Example], kind: str, seed: int) -> list[Example]:
    from llmaaa.simulation.teacher import SimulatedTeacher

    teacher = SimulatedTeacher(pool, noise=CHATGPT_NOISE[kind], seed=seed, kind=kind)
    return [Example(ex.id, ex.text, list(teacher.answer_spans(ex.text) or []), ex.tokens) for ex in pool]


class StepRecorder:
    """Records, for every reweighted step, each sentence's alignment, L2RW weight, loss and epoch."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, float, float]] = []  # id, epoch, alignment, weight, loss
        self._last: tuple[list[float], list[float]] | None = None

    def install(self, monkey: Any) -> None:
        from training import reweight as rw
        from training import trainer as tr

        real_fused, real_record = rw.losses_and_alignments, tr._Trainer._record
        recorder = self

        def fused(*args: Any, **kwargs: Any) -> Any:
            losses, alignments = real_fused(*args, **kwargs)
            recorder._last = (losses.detach().tolist(), alignments.tolist())
            return losses, alignments

        def record(run: Any, idx: Any, per_sentence: Any) -> None:
            real_record(run, idx, per_sentence)
            assert recorder._last is not None
            losses, alignments = recorder._last
            for i, w, a, loss in zip(idx, per_sentence.tolist(), alignments, losses, strict=True):
                recorder.rows.append((run.train_examples[i].id, run.epoch, float(a), float(w), float(loss)))

        monkey.setattr(rw, "losses_and_alignments", fused)
        monkey.setattr(tr._Trainer, "_record", record)


class _Monkey:
    def __init__(self) -> None:
        self.undo: list[tuple[Any, str, Any]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        self.undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def restore(self) -> None:
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)
        self.undo.clear()


def auc(correct: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(correct, score)) if 0 < correct.sum() < len(correct) else None


def analyse(rows: list[tuple[str, int, float, float, float]], labelled: list[Example], pool: list[Example],
            batch_size: int, epoch: int | None = None) -> dict[str, Any]:
    """The AUCs of one run's records (all reweighted epochs, or one `epoch`)."""
    from scipy.stats import spearmanr

    from llmaaa.simulate import same_spans

    gold = {ex.id: ex for ex in pool}
    by_id: dict[str, list[tuple[float, float, float]]] = {}
    for ex_id, ep, a, w, loss in rows:
        if epoch is None or ep == epoch:
            by_id.setdefault(ex_id, []).append((a, w, loss))
    ids = [ex.id for ex in labelled if ex.id in by_id]
    correct = np.array([same_spans(ex, gold[ex.id]) for ex in labelled if ex.id in by_id], dtype=bool)
    has_entities = np.array([bool(gold[i].spans) for i in ids], dtype=bool)
    weight = np.array([np.mean([w for _, w, _ in by_id[i]]) * batch_size for i in ids])
    positive = np.array([np.mean([a > 0 for a, _, _ in by_id[i]]) for i in ids])
    loss = np.array([np.mean([x for _, _, x in by_id[i]]) for i in ids])
    return {
        "sentences": len(ids), "wrong_share": round(float((~correct).mean()), 3),
        "wrong_share_with_entities": round(float((~correct[has_entities]).mean()), 3),
        "mean_rel_weight_correct": round(float(weight[correct].mean()), 3),
        "mean_rel_weight_wrong": round(float(weight[~correct].mean()), 3),
        "auc_weight": auc(correct, weight),
        "auc_weight_with_entities": auc(correct[has_entities], weight[has_entities]),
        "auc_positive_share": auc(correct, positive),
        "auc_positive_share_with_entities": auc(correct[has_entities], positive[has_entities]),
        "auc_low_loss": auc(correct, -loss),
        "spearman_weight_loss": round(float(spearmanr(weight, loss).statistic), 3),
        "auc_weight_has_entities": auc(has_entities, weight),  # do sentences with entities simply weigh more?
    }


def run_one(labelled: list[Example], pool: list[Example], meta: list[Example], dev: list[Example],
            gold_weight: float, args: argparse.Namespace) -> dict[str, Any]:
    from training.trainer import TrainConfig, train

    config = TrainConfig.from_recipe("recipe", gold_weight=gold_weight, max_epochs=args.epochs, patience=args.epochs,
                                     seed=args.seed)
    recorder, monkey = StepRecorder(), _Monkey()
    recorder.install(monkey)
    started = time.process_time()
    try:
        extra = {"dev_examples": dev} if "dev_examples" in inspect.signature(train).parameters else {}
        result = train(labelled, meta, config, progress=False, **extra)
    finally:
        monkey.restore()
    epochs = sorted({ep for _, ep, *_ in recorder.rows})
    return {"gold_weight": gold_weight, "cpu_s": round(time.process_time() - started, 1),
            "dev_f1_curve": [round(x, 3) for x in result.metrics["dev_f1_curve"]],
            "all_reweighted_epochs": analyse(recorder.rows, labelled, pool, config.batch_size),
            "per_epoch": {ep: analyse(recorder.rows, labelled, pool, config.batch_size, ep) for ep in epochs}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "bc5cdr")
    parser.add_argument("--pool", type=int, default=160)
    parser.add_argument("--gold", type=int, default=48, help="verified (meta) sentences, from dev, with entities")
    parser.add_argument("--dev", type=int, default=24, help="early-stopping sentences (other dev sentences)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flip-share", type=float, default=0.5)
    parser.add_argument("--noise", nargs="*", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    parser.add_argument("--gold-weights", nargs="*", type=float, default=[0.0, 0.5])
    parser.add_argument("--result-name", default="weight_auc/weight_auc")
    args = parser.parse_args(argv)

    from training.data import load_split, sample

    pool = sample(load_split(args.data / "train.jsonl"), args.pool, args.seed)
    verified = random.Random(args.seed).sample([ex for ex in load_split(args.data / "dev.jsonl") if ex.spans],
                                               args.gold + args.dev)
    meta, dev = verified[: args.gold], verified[args.gold :]
    runs = []
    for kind in args.noise:
        labelled = (flipped_labels(pool, args.flip_share, args.seed) if kind == "flip"
                    else simulated_labels(pool, kind, args.seed))
        for gold_weight in args.gold_weights:
            row = {"noise": kind, **run_one(labelled, pool, meta, dev, gold_weight, args)}
            runs.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_epoch"}), flush=True)
    (RESULTS / args.result_name).parent.mkdir(parents=True, exist_ok=True)
    write_result(args.result_name, {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs})


if __name__ == "__main__":
    main()
