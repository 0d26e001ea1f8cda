"""Learning to reweight: the JVP form equals the double-backward reference, and noisy sentences
get lower weights than clean ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_testdata import synthetic_set

from training import reweight as rw
from training.model import StudentTagger

TYPES = ["Chemical", "Disease"]


def fresh_tagger(tiny_encoder: Path, seed: int = 0) -> StudentTagger:
    torch.manual_seed(seed)
    return StudentTagger.from_pretrained(TYPES, tiny_encoder)


def batch_of(tagger: StudentTagger, examples) -> dict[str, torch.Tensor]:
    return tagger.collate(tagger.encode_examples(examples))


def align(tagger: StudentTagger, train_batch, meta_batch, alphas) -> torch.Tensor:
    """−g via the JVP form."""
    tangent = rw.meta_tangent(tagger.model, meta_batch, alphas)
    return rw.sentence_alignments(tagger.model, train_batch, tangent)


def warm_up(tagger: StudentTagger, steps: int = 40, lr: float = 3e-3) -> None:
    """A few plain steps on clean data so the model has a signal to align with."""
    data = synthetic_set(8 * steps, seed=11, prefix="warm")
    opt = torch.optim.AdamW(tagger.model.parameters(), lr=lr)
    tagger.model.train()
    for s in range(steps):
        batch = batch_of(tagger, data[8 * s : 8 * s + 8])
        rw.token_mean_loss(tagger.model(**rw.model_inputs(batch)).logits, batch["labels"]).backward()
        opt.step()
        opt.zero_grad()


def test_normalise_weights() -> None:
    w = rw.normalise_weights(torch.tensor([2.0, -1.0, 0.0, 6.0]))
    assert torch.allclose(w, torch.tensor([0.25, 0.0, 0.0, 0.75]))
    assert torch.equal(rw.normalise_weights(torch.tensor([-1.0, 0.0])), torch.zeros(2))


def test_step_sizes_split_encoder_and_head(tiny_encoder: Path) -> None:
    model = fresh_tagger(tiny_encoder).model
    alphas = rw.step_sizes(model, 1e-4, 1e-3)
    assert {n for n, a in alphas.items() if a == 1e-3} == {"classifier.weight", "classifier.bias"}
    assert alphas["bert.embeddings.word_embeddings.weight"] == 1e-4
    assert set(alphas) == {n for n, _ in model.named_parameters()}


def test_jvp_equals_double_backward_reference(tiny_encoder: Path) -> None:
    tagger = fresh_tagger(tiny_encoder)
    warm_up(tagger, steps=10)
    tagger.model.double()  # float64, so the two exact forms agree to ~1e-10
    train_batch = batch_of(tagger, synthetic_set(12, seed=1, prefix="t", flip_every=3))
    meta_batch = batch_of(tagger, synthetic_set(10, seed=2, prefix="m"))
    alphas = rw.step_sizes(tagger.model, 2e-5, 1e-4)
    tagger.model.train()  # the meta computations must switch dropout off themselves
    g = rw.reference_meta_gradient(tagger.model, train_batch, meta_batch, alphas)
    alignments = align(tagger, train_batch, meta_batch, alphas)
    assert tagger.model.training  # mode restored
    assert g.abs().max() > 1e-8  # not trivially zero
    torch.testing.assert_close(alignments, -g, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(
        rw.fast_weights(tagger.model, train_batch, meta_batch, alphas),
        rw.reference_weights(tagger.model, train_batch, meta_batch, alphas), rtol=1e-6, atol=1e-9)
    # The per-group step size matters: a different encoder:head ratio gives other alignments.
    other = align(tagger, train_batch, meta_batch, rw.step_sizes(tagger.model, 1e-4, 1e-4))
    assert not torch.allclose(other / other.norm(), alignments / alignments.norm(), rtol=1e-3)


def test_fused_forward_gives_same_alignments_losses_and_gradients(tiny_encoder: Path) -> None:
    tagger = fresh_tagger(tiny_encoder)
    model = tagger.model.double()
    train_batch = batch_of(tagger, synthetic_set(6, seed=4, prefix="t", flip_every=2))
    meta_batch = batch_of(tagger, synthetic_set(6, seed=5, prefix="m"))
    tangent = rw.meta_tangent(model, meta_batch, rw.step_sizes(model, 1e-4, 1e-3))
    model.eval()  # no dropout: the fused train-mode forward must then match the separate forms
    losses, alignments = rw.losses_and_alignments(model, train_batch, tangent)
    torch.testing.assert_close(alignments, rw.sentence_alignments(model, train_batch, tangent))
    plain = rw.per_sentence_losses(model(**rw.model_inputs(train_batch)).logits, train_batch["labels"])
    torch.testing.assert_close(losses, plain.detach())
    w = torch.linspace(0.1, 0.6, 6, dtype=torch.float64)
    (w * losses).sum().backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (w * plain).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(fused_grads[n], p.grad, msg=n)


@pytest.mark.parametrize("method", ["jvp", "reference"])
def test_flipped_sentences_get_lower_weights(tiny_encoder: Path, method: str) -> None:
    tagger = fresh_tagger(tiny_encoder)
    warm_up(tagger)
    train = synthetic_set(16, seed=7, prefix="t", flip_every=2)  # 8 flipped, 8 clean
    flipped = torch.tensor(["flip" in ex.id for ex in train])
    train_batch = batch_of(tagger, train)
    meta_batch = batch_of(tagger, synthetic_set(16, seed=8, prefix="m"))
    alphas = rw.step_sizes(tagger.model, 1e-4, 1e-3)
    w = rw.compute_weights(tagger.model, train_batch, meta_batch, alphas, method)
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0)
    assert w[~flipped].min() > w[flipped].max()  # every clean sentence outweighs every flipped one
    assert w[flipped].sum() < 0.05
    # The sign is what makes this work: the opposite sign prefers exactly the flipped sentences.
    if method == "jvp":
        neg_g = align(tagger, train_batch, meta_batch, alphas)
    else:
        neg_g = -rw.reference_meta_gradient(tagger.model, train_batch, meta_batch, alphas)
    wrong = rw.normalise_weights(-neg_g)
    assert wrong[flipped].min() > wrong[~flipped].max()


def test_unknown_method_rejected(tiny_encoder: Path) -> None:
    tagger = fresh_tagger(tiny_encoder)
    b = batch_of(tagger, synthetic_set(2, seed=1, prefix="t"))
    with pytest.raises(ValueError):
        rw.compute_weights(tagger.model, b, b, rw.step_sizes(tagger.model, 1e-4, 1e-3), "higher")
