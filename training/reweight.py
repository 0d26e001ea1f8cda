"""Learning to reweight (Ren et al., 2018), one weight per training sentence.

Each training sentence i gets a weight from how a tiny virtual SGD step on it would change the
token-mean loss on a clean (gold) meta batch:

    θ̂(ε) = θ − α ⊙ ∇θ Σᵢ εᵢ ℓᵢ(θ),     gᵢ = ∂ L_meta(θ̂(ε)) / ∂εᵢ at ε = 0,
    w̃ᵢ = max(−gᵢ, 0),                  w = w̃ / Σ w̃   (all zero → w = 0: the batch teaches nothing).

`α` is a per-parameter step size: the encoder lr for encoder parameters, the head lr for the rest
(as in LLMaAA, where the encoder:head ratio is the only scale that survives the normalisation).

Two ways to compute g, equal up to floating point:

- `reference_weights`: the literal recipe, a virtual step built with `create_graph=True` and a
  second backward to ε (what `higher` did in the LLMaAA code);
- `fast_weights`: the exact closed form at ε = 0, −gᵢ = ⟨α ⊙ ∇θ L_meta, ∇θ ℓᵢ⟩, i.e. the
  Jacobian of the per-sentence loss vector times one tangent: one meta backward and one
  forward-mode JVP, no second-order graph.

The trainer's step fuses the JVP into the real step's forward (`losses_and_alignments`), and may
give each labelled token its own weight instead of each sentence (`granularity="token"`): the JVP of
the per-token loss matrix costs the same as that of the per-sentence vector.

Beside the pure L2RW weights, `uniform_weights` are the weights under which Σ wᵢ ℓᵢ is exactly the
plain token-mean loss (sentence i weighs its share of labelled tokens), and `mix_weights` blends the
two: w = (1 − α)·uniform + α·L2RW, so α = 0 is plain training.

Deviation from the paper: all meta computations run without dropout (eval mode). The paper's
meta forward used a fresh dropout mask, which only adds noise to the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from training.model import IGNORE_INDEX

Batch = Mapping[str, torch.Tensor]  # input_ids, attention_mask, [token_type_ids], labels
Method = Literal["jvp", "reference"]
METHODS: tuple[str, ...] = ("jvp", "reference")
Granularity = Literal["sentence", "token"]
GRANULARITIES: tuple[str, ...] = ("sentence", "token")


def _full_precision(logits: torch.Tensor) -> torch.Tensor:
    # Half-precision logits are upcast for the loss; float64 stays float64 (tight equality tests).
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def per_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at every position, shape `(n, length)`; 0 where the label is ignored."""
    return nn.functional.cross_entropy(
        _full_precision(logits).transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )


def per_sentence_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of each sentence over its labelled positions, shape `(n,)`."""
    ce = nn.functional.cross_entropy(
        _full_precision(logits).transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    mask = (labels != IGNORE_INDEX).to(ce.dtype)
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def token_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over every labelled position of the batch (not a mean of means)."""
    ce = nn.functional.cross_entropy(
        _full_precision(logits).transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    mask = (labels != IGNORE_INDEX).to(ce.dtype)
    return (ce * mask).sum() / mask.sum().clamp(min=1.0)


def model_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


def encoder_param_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters inside `model.base_model` (the pretrained encoder)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return set()
    ids = {id(p) for p in base.parameters()}
    return {n for n, p in model.named_parameters() if p.requires_grad and id(p) in ids}


def step_sizes(model: nn.Module, encoder_lr: float, head_lr: float) -> dict[str, float]:
    """Per-parameter virtual step size: `encoder_lr` inside `model.base_model`, `head_lr` elsewhere."""
    encoder = encoder_param_names(model)
    return {
        name: (encoder_lr if name in encoder else head_lr)
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def normalise_weights(neg_grad: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Positive part, normalised to sum 1; an all-non-positive vector becomes all zeros.

    Any shape: a `(n,)` vector of sentences or a `(n, length)` matrix of tokens, where `mask`
    (True at labelled positions) keeps ignored positions at exactly 0.
    """
    w = neg_grad.detach().clamp(min=0)
    if mask is not None:
        w = w * mask.to(w.dtype)
    total = w.sum()
    return w / total if total > 0 else torch.zeros_like(w)


def uniform_weights(labels: torch.Tensor, granularity: Granularity = "sentence") -> torch.Tensor:
    """The weights of plain training: Σ w ⊙ losses equals `token_mean_loss` (up to rounding).

    Per token: 1/N at each of the batch's N labelled positions. Per sentence: nᵢ/N, the share of
    labelled tokens (not 1/batch), because the sentence losses are themselves token means.
    """
    mask = (labels != IGNORE_INDEX).to(torch.float32)
    per = mask if granularity == "token" else mask.sum(1)
    return per / mask.sum().clamp(min=1.0)


def mix_weights(l2rw: torch.Tensor, uniform: torch.Tensor, alpha: float) -> torch.Tensor:
    """w = (1 − α)·uniform + α·L2RW; α = 0 returns `uniform` itself (bit for bit plain training)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mix alpha must be in [0, 1], not {alpha}")
    if alpha == 0.0:
        return uniform
    if alpha == 1.0:
        return l2rw
    return (1.0 - alpha) * uniform.to(l2rw.dtype) + alpha * l2rw


def sentence_totals(weights: torch.Tensor) -> torch.Tensor:
    """Per-sentence weight: itself for sentence weights, the sum over its tokens for token weights."""
    return weights if weights.dim() == 1 else weights.sum(1)


@contextlib.contextmanager
def no_dropout(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the meta computations; restores the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def reference_meta_gradient(model: nn.Module, train_batch: Batch, meta_batch: Batch,
                            alphas: Mapping[str, float]) -> torch.Tensor:
    """Ren et al. literally: g = ∂L_meta(θ̂(ε))/∂ε at ε = 0 through a differentiable virtual SGD step."""
    params = _trainable(model)
    labels = train_batch["labels"]
    # Double backward through attention needs the math SDPA kernel (the fused CPU one has no
    # second derivative).
    with no_dropout(model), sdpa_kernel([SDPBackend.MATH]):
        logits = functional_call(model, params, args=(), kwargs=model_inputs(train_batch)).logits
        losses = per_sentence_losses(logits, labels)
        eps = torch.zeros_like(losses.detach()).requires_grad_()
        inner = (eps * losses).sum()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
        virtual = {
            name: p if g is None else p - alphas[name] * g
            for (name, p), g in zip(params.items(), grads, strict=True)
        }
        meta_logits = functional_call(model, virtual, args=(), kwargs=model_inputs(meta_batch)).logits
        meta_loss = token_mean_loss(meta_logits, meta_batch["labels"])
        (g_eps,) = torch.autograd.grad(meta_loss, eps)
    return g_eps


def reference_weights(model: nn.Module, train_batch: Batch, meta_batch: Batch,
                      alphas: Mapping[str, float]) -> torch.Tensor:
    """w = normalise(max(−g, 0)) with g from the double-backward reference."""
    return normalise_weights(-reference_meta_gradient(model, train_batch, meta_batch, alphas))


def meta_gradient(model: nn.Module, meta_batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """∇θ of the token-mean loss over all of `meta_batches` together, without dropout.

    Accumulated batch by batch (each contributes its summed CE over the total token count), so a
    whole verified set is one exact gradient without holding every activation at once.
    """
    params = _trainable(model)
    total = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in meta_batches)
    grads: dict[str, torch.Tensor] = {}
    with no_dropout(model):
        for batch in meta_batches:
            logits = model(**model_inputs(batch)).logits
            summed = per_token_losses(logits, batch["labels"]).sum() / max(total, 1)
            parts = torch.autograd.grad(summed, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), parts, strict=True):
                if g is None:
                    continue
                if name in grads:
                    grads[name].add_(g)
                else:
                    grads[name] = g  # the first batch's gradient is the accumulator: no zero-fill pass
    return {n: grads[n] if n in grads else torch.zeros_like(p) for n, p in params.items()}


def meta_tangent(model: nn.Module, meta_batch: Batch, alphas: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """`α ⊙ ∇θ L_meta(θ)` without dropout: the direction the JVP projects every sentence onto."""
    params = _trainable(model)
    with no_dropout(model):
        meta_loss = token_mean_loss(model(**model_inputs(meta_batch)).logits, meta_batch["labels"])
        grads = torch.autograd.grad(meta_loss, list(params.values()), allow_unused=True)
    return {
        name: (torch.zeros_like(p) if g is None else g.mul_(alphas[name]))
        for (name, p), g in zip(params.items(), grads, strict=True)
    }


def sentence_alignments(model: nn.Module, train_batch: Batch,
                        tangent: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """`(⟨tangent, ∇θ ℓᵢ⟩)ᵢ` for the batch as one forward-mode JVP (= −gᵢ when tangent = α ⊙ ∇L_meta)."""
    primals = {n: p.detach() for n, p in _trainable(model).items()}
    inputs, labels = model_inputs(train_batch), train_batch["labels"]

    def losses(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return per_sentence_losses(functional_call(model, params, args=(), kwargs=inputs).logits, labels)

    # The fused CPU flash kernel has no forward-mode derivative; the math SDPA kernel does, and an
    # eager-attention model ignores this context.
    with no_dropout(model), sdpa_kernel([SDPBackend.MATH]):
        _, tangent_out = jvp(losses, (primals,), (dict(tangent),))
    return tangent_out


def losses_and_alignments(model: nn.Module, train_batch: Batch, tangent: Mapping[str, torch.Tensor],
                          granularity: Granularity = "sentence") -> tuple[torch.Tensor, torch.Tensor]:
    """One forward in the model's current mode giving both the per-sentence losses (with their
    backward graph, for the real step) and their JVP along `tangent` (the sentence alignments).
    With `granularity="token"` both are `(n, length)` per-token matrices (0 at ignored positions).

    This is what the trainer's default step uses: the real step needs that forward anyway, so
    the alignments cost only the tangent half of a JVP. In train mode the alignments are those of
    the dropout mask of the very step being taken; without dropout they equal `sentence_alignments`.
    """
    params = _trainable(model)
    with fwAD.dual_level(), sdpa_kernel([SDPBackend.MATH]):
        dual = {n: fwAD.make_dual(p, tangent[n]) for n, p in params.items()}
        logits = functional_call(model, dual, args=(), kwargs=model_inputs(train_batch)).logits
        loss_fn = per_token_losses if granularity == "token" else per_sentence_losses
        losses = loss_fn(logits, train_batch["labels"])
        primal, alignments = fwAD.unpack_dual(losses)
    if alignments is None:  # no parameter reaches the loss along the tangent
        alignments = torch.zeros_like(primal)
    return primal, alignments.detach()


def fast_weights(model: nn.Module, train_batch: Batch, meta_batch: Batch,
                 alphas: Mapping[str, float]) -> torch.Tensor:
    """The same weights as `reference_weights` via one meta backward plus one JVP."""
    return normalise_weights(sentence_alignments(model, train_batch, meta_tangent(model, meta_batch, alphas)))


def compute_weights(model: nn.Module, train_batch: Batch, meta_batch: Batch,
                    alphas: Mapping[str, float], method: Method = "jvp") -> torch.Tensor:
    if method == "jvp":
        return fast_weights(model, train_batch, meta_batch, alphas)
    if method == "reference":
        return reference_weights(model, train_batch, meta_batch, alphas)
    raise ValueError(f"unknown reweight method {method!r}; choose one of {METHODS}")
