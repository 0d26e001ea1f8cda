"""train(): early stopping keeps the best epoch, reweighting down-weights noisy sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_testdata import synthetic_set

from training.data import load_split
from training.trainer import TrainConfig, dev_loss_and_predictions, linear_warmup_decay, train

FAST = {"encoder_lr": 1e-3, "head_lr": 1e-2, "batch_size": 8, "meta_batch_size": 8}


def test_linear_warmup_then_decay() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, warmup=2, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        TrainConfig(reweight_method="higher")
    with pytest.raises(ValueError):
        TrainConfig(patience=0)


def test_early_stopping_returns_best_epoch(tiny_encoder: Path) -> None:
    train_set = synthetic_set(48, seed=1, prefix="t")
    # A dev set that contradicts the training labels: the better the model fits, the higher its loss.
    dev_set = synthetic_set(16, seed=2, prefix="d", flip_every=1)
    config = TrainConfig(**FAST, max_epochs=10, patience=1, reweight=False, seed=3, early_stop="loss")
    result = train(train_set, dev_set, config, encoder=tiny_encoder, progress=False)
    m = result.metrics
    curve = m["dev_loss_curve"]
    assert m["stopped_early"] and m["epochs_run"] < 10 and len(curve) == m["epochs_run"]
    assert m["best_epoch"] == curve.index(min(curve)) + 1 < m["epochs_run"]
    assert curve[-1] > curve[m["best_epoch"] - 1]
    # The returned weights are the best epoch's, not the last epoch's.
    enc = result.model.encode_examples(dev_set)
    loss, _ = dev_loss_and_predictions(result.model, dev_set, enc, batch_size=32)
    assert loss == pytest.approx(curve[m["best_epoch"] - 1], rel=1e-5)
    assert m["best_dev_loss"] == pytest.approx(loss, rel=1e-5)
    assert result.sentence_weights == {}  # plain training computes no weights


def test_reweighting_downweights_flipped_sentences(tiny_encoder: Path) -> None:
    train_set = synthetic_set(48, seed=5, prefix="t", flip_every=3)  # 16 flipped
    meta_set = synthetic_set(16, seed=6, prefix="m")
    config = TrainConfig(**{**FAST, "encoder_lr": 3e-3, "head_lr": 3e-2}, max_epochs=6, patience=6, seed=1)
    result = train(train_set, meta_set, config, encoder=tiny_encoder, progress=False)
    weights, counts = result.sentence_weights, result.sentence_weight_counts
    assert set(weights) == {ex.id for ex in train_set}
    assert set(counts.values()) == {result.metrics["epochs_run"]}
    flipped = [w for k, w in weights.items() if k.endswith("-flip")]
    clean = [w for k, w in weights.items() if not k.endswith("-flip")]
    # Means over all of training, including the first steps where the model cannot tell yet.
    assert sum(flipped) / len(flipped) < 0.75 * sum(clean) / len(clean)
    assert all(w >= 0 for w in weights.values())
    # The meta gradient's votes, without the weights' size: clean sentences are voted for more often (0.80 vs 0.52).
    shares = result.sentence_positive_shares
    assert set(shares) == set(weights) and all(0 <= v <= 1 for v in shares.values())
    flipped_votes = [v for k, v in shares.items() if k.endswith("-flip")]
    clean_votes = [v for k, v in shares.items() if not k.endswith("-flip")]
    assert sum(flipped_votes) / len(flipped_votes) < sum(clean_votes) / len(clean_votes) - 0.15
    assert result.metrics["dev_f1"] > 0.7
    assert result.metrics["steps"] == 6 * 6


def test_same_seed_same_result_and_retrains_from_scratch(tiny_encoder: Path) -> None:
    train_set = synthetic_set(16, seed=5, prefix="t")
    meta_set = synthetic_set(8, seed=6, prefix="m")
    config = TrainConfig(**FAST, max_epochs=2, reweight=True, seed=4)
    a = train(train_set, meta_set, config, encoder=tiny_encoder, progress=False)
    b = train(train_set, meta_set, config, encoder=tiny_encoder, progress=False)
    assert a.metrics["dev_loss_curve"] == pytest.approx(b.metrics["dev_loss_curve"], rel=1e-6)
    assert a.sentence_weights == pytest.approx(b.sentence_weights, rel=1e-5)


def test_empty_inputs_rejected(tiny_encoder: Path) -> None:
    data = synthetic_set(4, seed=1, prefix="t")
    with pytest.raises(ValueError):
        train([], data, encoder=tiny_encoder, progress=False)
    with pytest.raises(ValueError):
        train(data, [], encoder=tiny_encoder, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["jvp", "reference"])
def test_minilm_reweighted_training_runs(bc5cdr_dir: Path, method: str) -> None:
    """The real encoder (sdpa attention) through both reweighting paths on a tiny BC5CDR slice."""
    train_set = load_split(bc5cdr_dir / "train.jsonl", limit=16)
    dev_set = load_split(bc5cdr_dir / "dev.jsonl", limit=8)
    config = TrainConfig(max_epochs=1, batch_size=8, meta_batch_size=8, reweight_method=method)
    result = train(train_set, dev_set, config, progress=False)
    assert result.model.labels == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert result.metrics["steps"] == 2 and len(result.sentence_weights) == 16
    assert sum(result.sentence_weights.values()) == pytest.approx(2.0, abs=1e-4)  # two batches of weights
