"""The reweighting recipe's options: α-mix, uniform fallback, token weights, gold term, meta
gradient over the whole verified set, F1 early stopping, presets and progress reports."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from training_testdata import synthetic_set, unseen_word_set

from training import reweight as rw
from training import trainer as tr
from training.model import IGNORE_INDEX, StudentTagger
from training.trainer import RECIPES, TrainConfig, epoch_batches, mix_alpha_at, train

FAST = {"encoder_lr": 1e-3, "head_lr": 1e-2, "batch_size": 8, "meta_batch_size": 8}
TYPES = ["Chemical", "Disease"]


def small_sets() -> tuple[list, list]:
    return synthetic_set(24, seed=5, prefix="t", flip_every=3), synthetic_set(8, seed=6, prefix="m")


def float64_tagger(tiny_encoder: Path) -> StudentTagger:
    torch.manual_seed(0)
    tagger = StudentTagger.from_pretrained(TYPES, tiny_encoder)
    tagger.model.double().eval()
    return tagger


# --------------------------------------------------------------------------------------- weights
def test_mix_with_alpha_zero_is_uniform_and_uniform_is_the_plain_loss(tiny_encoder: Path) -> None:
    tagger = float64_tagger(tiny_encoder)
    batch = tagger.collate(tagger.encode_examples(synthetic_set(6, seed=1, prefix="t")))
    logits = tagger.model(**rw.model_inputs(batch)).logits
    labels = batch["labels"]
    plain = rw.token_mean_loss(logits, labels)
    for granularity, losses in (("sentence", rw.per_sentence_losses(logits, labels)),
                                ("token", rw.per_token_losses(logits, labels))):
        uniform = rw.uniform_weights(labels, granularity).double()
        assert uniform.sum().item() == pytest.approx(1.0)
        torch.testing.assert_close((uniform * losses).sum(), plain)
        l2rw = rw.normalise_weights(torch.rand_like(losses))
        assert rw.mix_weights(l2rw, uniform, 0.0) is uniform
        half = rw.mix_weights(l2rw, uniform, 0.5)
        torch.testing.assert_close(half, 0.5 * uniform + 0.5 * l2rw)
    # Sentence weights are token shares, not 1/batch: a mean of sentence means is not the plain loss.
    lengths = (labels != IGNORE_INDEX).sum(1).double()
    assert not torch.allclose(rw.uniform_weights(labels).double(), torch.full_like(lengths, 1 / len(lengths)))
    with pytest.raises(ValueError):
        rw.mix_weights(l2rw, uniform, 1.5)


def test_training_with_alpha_zero_equals_plain_training(tiny_encoder: Path) -> None:
    train_set, meta_set = small_sets()
    base = {**FAST, "max_epochs": 2, "patience": 2, "seed": 3}
    plain = train(train_set, meta_set, TrainConfig(**base, reweight=False), encoder=tiny_encoder, progress=False)
    mixed = train(train_set, meta_set, TrainConfig(**base, reweight=True, mix_alpha=0.0),
                  encoder=tiny_encoder, progress=False)
    assert mixed.metrics["dev_loss_curve"] == plain.metrics["dev_loss_curve"]  # exactly
    a, b = plain.model.model.state_dict(), mixed.model.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert mixed.metrics["meta_computations"] == 0  # α = 0 needs no meta gradient at all


def test_alpha_schedule_warmup_then_linear_ramp() -> None:
    cfg = TrainConfig(warmup_epochs=1, mix_alpha=0.6, mix_ramp_epochs=2)
    alphas = [mix_alpha_at(cfg, s, steps_per_epoch=2) for s in range(8)]
    assert alphas == pytest.approx([0, 0, 0.15, 0.3, 0.45, 0.6, 0.6, 0.6])
    assert mix_alpha_at(TrainConfig(), 0, 5) == 1.0  # default: L2RW from the first step, as before
    assert mix_alpha_at(TrainConfig(reweight=False, mix_alpha=0.5), 9, 5) == 0.0


def test_token_weights_shape_and_normalisation(tiny_encoder: Path) -> None:
    tagger = float64_tagger(tiny_encoder)
    batch = tagger.collate(tagger.encode_examples(synthetic_set(6, seed=2, prefix="t", flip_every=2)))
    meta = tagger.collate(tagger.encode_examples(synthetic_set(6, seed=3, prefix="m")))
    tangent = rw.meta_tangent(tagger.model, meta, rw.step_sizes(tagger.model, 1e-4, 1e-3))
    labels = batch["labels"]
    mask = labels != IGNORE_INDEX
    tok_losses, tok_align = rw.losses_and_alignments(tagger.model, batch, tangent, "token")
    sent_losses, sent_align = rw.losses_and_alignments(tagger.model, batch, tangent, "sentence")
    assert tok_losses.shape == tok_align.shape == labels.shape
    # A sentence's loss is its tokens' mean, so its alignment is the mean of its tokens' alignments.
    n = mask.sum(1).double()
    torch.testing.assert_close(tok_align.sum(1) / n, sent_align)
    torch.testing.assert_close(tok_losses.sum(1) / n, sent_losses)
    w = rw.normalise_weights(tok_align, mask)
    assert w.shape == labels.shape and (w >= 0).all()
    assert w.sum().item() == pytest.approx(1.0)
    assert (w[~mask] == 0).all() and (w[mask] > 0).any() and (w[mask] == 0).any()  # some tokens muted
    assert rw.sentence_totals(w).shape == (labels.shape[0],)


def test_token_granularity_trains_and_reports_sentence_totals(tiny_encoder: Path) -> None:
    train_set, meta_set = small_sets()
    cfg = TrainConfig(**FAST, max_epochs=1, seed=1, weight_granularity="token")
    result = train(train_set, meta_set, cfg, encoder=tiny_encoder, progress=False)
    assert set(result.sentence_weights) == {ex.id for ex in train_set}
    # Token weights summed per sentence: each non-skipped batch still sums to 1.
    total = sum(result.sentence_weights.values())
    assert total == pytest.approx(3 - result.metrics["skipped_zero_weight_batches"], abs=1e-4)


# -------------------------------------------------------------------------------------- fallback
def _anti_aligned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every sentence hurt the meta loss: L2RW weights all zero in every batch."""
    real = rw.losses_and_alignments

    def negative(*args, **kwargs):  # type: ignore[no-untyped-def]
        losses, align = real(*args, **kwargs)
        return losses, -align.abs() - 1.0

    monkeypatch.setattr(rw, "losses_and_alignments", negative)


def test_uniform_fallback_trains_on_an_all_zero_batch(tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_set, meta_set = small_sets()
    base = {**FAST, "max_epochs": 1, "seed": 2}
    _anti_aligned(monkeypatch)
    skip = train(train_set, meta_set, TrainConfig(**base, zero_fallback="skip"), encoder=tiny_encoder, progress=False)
    uniform = train(train_set, meta_set, TrainConfig(**base, zero_fallback="uniform"),
                    encoder=tiny_encoder, progress=False)
    plain = train(train_set, meta_set, TrainConfig(**base, reweight=False), encoder=tiny_encoder, progress=False)
    assert skip.metrics["skipped_zero_weight_batches"] == skip.metrics["steps"] == 3
    assert uniform.metrics["skipped_zero_weight_batches"] == 0
    # The recorded L2RW weights are the zeros; the step taken is the plain one.
    assert set(uniform.sentence_weights.values()) == {0.0}
    assert uniform.metrics["dev_loss_curve"] == pytest.approx(plain.metrics["dev_loss_curve"], rel=1e-4)
    assert skip.metrics["dev_loss_curve"] != pytest.approx(plain.metrics["dev_loss_curve"], rel=1e-3)


# ------------------------------------------------------------------------------- meta gradient
def test_meta_gradient_over_several_batches_is_the_token_mean_of_their_union(tiny_encoder: Path) -> None:
    tagger = float64_tagger(tiny_encoder)
    enc = tagger.encode_examples(synthetic_set(10, seed=4, prefix="m"))
    parts = [tagger.collate(enc[:3]), tagger.collate(enc[3:])]
    union = tagger.collate(enc)
    got = rw.meta_gradient(tagger.model, parts)
    params = {n: p for n, p in tagger.model.named_parameters() if p.requires_grad}
    loss = rw.token_mean_loss(tagger.model(**rw.model_inputs(union)).logits, union["labels"])
    expected = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for (name, p), g in zip(params.items(), expected, strict=True):
        torch.testing.assert_close(got[name], torch.zeros_like(p) if g is None else g, msg=name)


def test_meta_every_reuses_the_meta_gradient(tiny_encoder: Path) -> None:
    train_set, meta_set = small_sets()
    cfg = TrainConfig(**FAST, max_epochs=2, seed=1, meta_every=2, meta_full=True)
    result = train(train_set, meta_set, cfg, encoder=tiny_encoder, progress=False)
    assert result.metrics["steps"] == 6 and result.metrics["meta_computations"] == 3


# ------------------------------------------------------------------------------------ gold term
def test_gold_term_adds_its_gradient(tiny_encoder: Path) -> None:
    """gold_weight λ: the step's gradient is ∇ L_train + λ ∇ L_gold (the whole verified set)."""
    train_set, meta_set = small_sets()
    torch.manual_seed(0)
    tagger = StudentTagger.from_pretrained(TYPES, tiny_encoder)
    for module in tagger.model.modules():  # no dropout, so the train-mode step is deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    cfg = TrainConfig(**FAST, reweight=False, gold_weight=0.5, meta_full=True, max_grad_norm=1e9)
    run = tr._Trainer(tagger, train_set, meta_set, cfg, torch.device("cpu"))
    params = dict(tagger.model.named_parameters())
    captured: dict[str, torch.Tensor] = {}
    run.optimizer.step = lambda *a, **k: captured.update({n: p.grad.clone() for n, p in params.items()})
    idx = list(range(8))
    run.train_step(idx)
    batch = run.collate([run.enc_train[i] for i in idx])
    gold = run.collate(run.enc_meta)
    train_loss = rw.token_mean_loss(tagger.model(**rw.model_inputs(batch)).logits, batch["labels"])
    gold_loss = rw.token_mean_loss(tagger.model(**rw.model_inputs(gold)).logits, gold["labels"])
    g_train = torch.autograd.grad(train_loss, list(params.values()), allow_unused=True)
    g_gold = torch.autograd.grad(gold_loss, list(params.values()), allow_unused=True)
    assert run.meta_computations == 1
    for (name, p), a, b in zip(params.items(), g_train, g_gold, strict=True):
        expected = (torch.zeros_like(p) if a is None else a) + 0.5 * (torch.zeros_like(p) if b is None else b)
        torch.testing.assert_close(captured[name], expected, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------ early stopping
def _fake_run(early_stop: str, patience: int = 5) -> SimpleNamespace:
    return SimpleNamespace(config=TrainConfig(early_stop=early_stop, patience=patience),
                           model=torch.nn.Linear(1, 1))


@pytest.mark.parametrize(("early_stop", "best"), [("f1", 3), ("loss", 2)])
def test_selection_by_f1_or_loss(early_stop: str, best: int) -> None:
    sel = tr._Selection()
    run = _fake_run(early_stop)
    for epoch, (loss, f1) in enumerate([(0.5, 0.6), (0.4, 0.7), (0.45, 0.8), (0.6, 0.75)], start=1):
        sel.update(run, epoch, loss, {"f1": f1})
    assert sel.best_epoch == best


def test_f1_ties_go_to_the_lower_loss_and_patience_counts_f1() -> None:
    sel = tr._Selection()
    run = _fake_run("f1", patience=2)
    assert not sel.update(run, 1, 0.5, {"f1": 0.7})
    assert not sel.update(run, 2, 0.4, {"f1": 0.7})  # same F1, lower loss: better
    assert sel.best_epoch == 2
    assert not sel.update(run, 3, 0.3, {"f1": 0.69})  # lower loss does not count under "f1"
    assert sel.update(run, 4, 0.2, {"f1": 0.6})  # second epoch without a better F1: stop
    assert sel.best_epoch == 2 and sel.stopped_early


def test_early_stop_f1_returns_the_f1_best_epoch(tiny_encoder: Path) -> None:
    train_set, meta_set = small_sets()
    cfg = TrainConfig(**FAST, max_epochs=4, patience=4, reweight=False, seed=3)
    result = train(train_set, meta_set, cfg, encoder=tiny_encoder, progress=False)
    m = result.metrics
    curve = m["dev_f1_curve"]
    assert m["early_stop"] == "f1" and m["dev_f1"] == max(curve) == curve[m["best_epoch"] - 1]
    assert result.model.predict([ex.text for ex in meta_set]) is not None
    _, preds = tr.dev_loss_and_predictions(result.model, meta_set, result.model.encode_examples(meta_set), 32)
    scores = tr.entity_scores([ex.spans for ex in meta_set], preds, [ex.text for ex in meta_set])
    assert scores["f1"] == pytest.approx(max(curve))  # the returned weights are that epoch's


# ------------------------------------------------------- early stopping when the gold term trains on meta
def test_split_meta_dev_is_stable_seeded_and_refuses_an_empty_part() -> None:
    verified = unseen_word_set(20, seed=1, prefix="v")
    meta, dev = tr.split_meta_dev(verified, 0.3, seed=7)
    dev_ids = {ex.id for ex in dev}
    assert len(dev) == 6 and len(meta) == 14 and dev_ids.isdisjoint(ex.id for ex in meta)
    assert {ex.id for ex in tr.split_meta_dev(verified[::-1], 0.3, seed=7)[1]} == dev_ids  # order does not matter
    assert {ex.id for ex in tr.split_meta_dev(verified, 0.3, seed=8)[1]} != dev_ids  # the seed does
    grown = tr.split_meta_dev(verified + unseen_word_set(5, seed=2, prefix="w"), 0.3, seed=7)[1]
    assert len(dev_ids & {ex.id for ex in grown}) >= 4  # a grown set keeps most of its split
    repeated = [*verified[:4], verified[0]]  # one id twice: both copies on the same side
    sides = [{ex.id for ex in part} for part in tr.split_meta_dev(repeated, 0.5, seed=0)]
    assert len(sides[0]) == len(sides[1]) == 2 and sides[0].isdisjoint(sides[1])
    with pytest.raises(ValueError, match="no dev"):
        tr.split_meta_dev(verified[:1], 0.3, seed=0)
    with pytest.raises(ValueError, match="no meta"):
        tr.split_meta_dev(verified[:2], 0.9, seed=0)
    with pytest.raises(ValueError):
        TrainConfig(dev_fraction=0.0)


def test_early_stopping_sets_by_case(caplog: pytest.LogCaptureFixture) -> None:
    train_set, verified = synthetic_set(8, seed=1, prefix="t"), unseen_word_set(10, seed=2, prefix="v")
    plain, gold = TrainConfig(), TrainConfig(gold_weight=0.5, seed=3)
    meta, dev = tr.early_stopping_sets(train_set, verified, None, plain)
    assert meta == dev == verified  # no gold term: the meta set is the dev set, as in LLMaAA
    meta, dev = tr.early_stopping_sets(train_set, verified, None, gold)
    assert (meta, dev) == tr.split_meta_dev(verified, gold.dev_fraction, gold.seed)
    given = unseen_word_set(3, seed=4, prefix="d")
    assert tr.early_stopping_sets(train_set, verified, given, gold) == (verified, given)
    with pytest.raises(ValueError, match="gold term trains"):
        tr.early_stopping_sets(train_set, verified, verified[:2], gold)
    assert tr.early_stopping_sets(train_set, verified, verified[:2], plain)[1] == verified[:2]
    with pytest.raises(ValueError, match="empty"):
        tr.early_stopping_sets(train_set, verified, [], plain)
    with caplog.at_level("WARNING"):
        tr.early_stopping_sets(train_set, verified, train_set[:2], plain)
    assert "2 of 2 dev sentence(s) are also training examples" in caplog.text


def test_gold_term_early_stops_on_verified_sentences_it_does_not_train_on(
        tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_set, verified = synthetic_set(16, seed=5, prefix="t"), unseen_word_set(10, seed=6, prefix="v")
    trained_on: set[tuple[int, ...]] = set()  # every sentence a meta (gold-term) gradient was taken on
    judged_on: set[tuple[int, ...]] = set()  # every sentence early stopping scored
    real_meta_gradient, real_dev_pass = rw.meta_gradient, tr.dev_loss_and_predictions

    def recording_meta_gradient(model, batches):  # type: ignore[no-untyped-def]
        for b in batches:
            rows = zip(b["input_ids"], b["attention_mask"], strict=True)
            trained_on.update(tuple(ids[mask.bool()].tolist()) for ids, mask in rows)
        return real_meta_gradient(model, batches)

    def recording_dev_pass(tagger, examples, encoded, batch_size):  # type: ignore[no-untyped-def]
        judged_on.update(tuple(enc.input_ids) for enc in encoded)
        return real_dev_pass(tagger, examples, encoded, batch_size)

    monkeypatch.setattr(rw, "meta_gradient", recording_meta_gradient)
    monkeypatch.setattr(tr, "dev_loss_and_predictions", recording_dev_pass)
    config = TrainConfig.from_recipe("recipe", **FAST, max_epochs=3, seed=1)  # warm-up and reweighted steps
    result = train(train_set, verified, config, encoder=tiny_encoder, progress=False)
    assert len(trained_on) == 7 and len(judged_on) == 3  # 30 % of the 10 verified sentences held out
    assert trained_on.isdisjoint(judged_on)  # the old trainer early-stopped on the 10 it trained on
    assert result.metrics["n_meta"] == 7 and result.metrics["n_dev"] == 3 and not result.metrics["dev_is_meta"]


def test_gold_term_run_stops_before_the_cap_on_held_out_sentences(tiny_encoder: Path) -> None:
    """Verified sentences whose entity type can only be learnt by heart: on the ones the gold term trains on
    the dev loss falls every epoch, so the old trainer, which early-stopped on them, ran to the cap of 12
    (seeds 1-4); on held-out ones the loss turns up once the student is sure of its guesses (stops at 10-11)."""
    train_set, verified = synthetic_set(24, seed=5, prefix="t"), unseen_word_set(16, seed=6, prefix="v")
    config = TrainConfig.from_recipe("recipe", **FAST, max_epochs=12, patience=2, seed=1, early_stop="loss")
    m = train(train_set, verified, config, encoder=tiny_encoder, progress=False).metrics
    assert m["stopped_early"] and m["epochs_run"] < 12
    assert min(m["dev_loss_curve"]) < m["dev_loss_curve"][-1]


# ------------------------------------------------------------------------------ presets, batches
def test_recipes_and_overrides() -> None:
    assert {"plain", "l2rw", "recipe"} <= set(RECIPES)
    assert TrainConfig.from_recipe("plain").reweight is False
    assert TrainConfig.from_recipe("l2rw") == TrainConfig(reweight=True)  # today's reweighting
    recipe = TrainConfig.from_recipe("recipe", seed=7)
    assert recipe.seed == 7 and recipe.reweight and recipe.zero_fallback == "uniform"
    with pytest.raises(ValueError):
        TrainConfig.from_recipe("nope")
    with pytest.raises(TypeError):
        TrainConfig.from_recipe("plain", not_a_field=1)
    for bad in ({"early_stop": "acc"}, {"zero_fallback": "x"}, {"weight_granularity": "word"},
                {"mix_alpha": 1.5}, {"gold_weight": -1.0}, {"device": "tpu"}, {"meta_every": 0},
                {"reweight_method": "reference", "weight_granularity": "token"}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_bucketed_batches_cover_everything_once_with_less_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(5, 80, (100,), generator=gen)]
    bucketed = epoch_batches(lengths, 8, torch.Generator().manual_seed(1))
    shuffled = epoch_batches(lengths, 8, torch.Generator().manual_seed(1), bucket=False)
    assert len(bucketed) == len(shuffled) == 13
    assert sorted(i for b in bucketed for i in b) == list(range(100))

    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(bucketed) < 0.3 * padding(shuffled)
    again = epoch_batches(lengths, 8, torch.Generator().manual_seed(2))
    assert {tuple(b) for b in again} != {tuple(b) for b in bucketed}  # batches change every epoch


def test_progress_callback_reports_epochs_and_steps(tiny_encoder: Path) -> None:
    train_set, meta_set = small_sets()
    calls: list[dict] = []
    cfg = TrainConfig(**FAST, max_epochs=2, patience=2, reweight=False, progress_every=2)
    train(train_set, meta_set, cfg, encoder=tiny_encoder, progress=False, progress_callback=calls.append)
    assert all({"epoch", "max_epochs", "step", "total_steps", "phase"} <= set(c) for c in calls)
    assert [c["phase"] for c in calls if c["phase"] != "train"] == ["evaluate", "evaluate", "done"]
    assert {c["epoch"] for c in calls if c["phase"] == "train"} == {1, 2}
    assert [c["step"] for c in calls] == sorted(c["step"] for c in calls)
    assert calls[-1]["step"] == calls[-1]["total_steps"] == 6
    assert any(c["phase"] == "train" and c["step"] == 2 for c in calls)  # every progress_every steps


def test_cli_options_override_the_recipe() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    tr.add_arguments(parser)
    args = parser.parse_args(["--train", "t.jsonl", "--meta", "m.jsonl", "--recipe", "recipe", "--mix-alpha", "0.3",
                              "--epochs", "5", "--meta-full", "--weight-granularity", "token"])
    config = tr.config_from_args(args)
    assert config == TrainConfig.from_recipe("recipe", mix_alpha=0.3, max_epochs=5, meta_full=True,
                                             weight_granularity="token")
    plain = tr.config_from_args(parser.parse_args(["--train", "t", "--meta", "m", "--no-reweight"]))
    assert plain.reweight is False and plain.mix_alpha == TrainConfig().mix_alpha
