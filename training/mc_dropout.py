"""MC dropout on the classification head only: the per-pass word marginals BALD needs.

Shelmanov et al. (2021) found that for Transformer taggers, dropout sampled on the classification
layer alone estimates uncertainty as well as dropout through the whole network, for the price of one
encoder pass: the encoder runs once (in eval mode, deterministic), then the head runs `passes` times on
the word-initial hidden states with a fresh dropout mask each time.

This mirrors what `AutoModelForTokenClassification` does in training mode for BERT-like models
(`classifier(dropout(encoder(x)))`), so the passes are draws from the student's own training-time
distribution. The masks come from a seeded CPU generator: the same texts, seed and batch size give the
same passes. Words the encoder never sees (truncated, or dropped by the tokenizer) are `O` with
probability 1 in every pass, as in `StudentTagger.word_marginals`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from training.model import StudentTagger

__all__ = ["head_dropout_rate", "mc_head_marginals"]


def head_dropout_rate(model: Any) -> float:
    """The dropout the model's token-classification head applies in training (BERT's rule)."""
    cfg = model.config
    rate = getattr(cfg, "classifier_dropout", None)
    if rate is None:
        rate = getattr(cfg, "hidden_dropout_prob", None)
    if rate is None:
        raise ValueError(f"{type(model).__name__} has no classifier_dropout or hidden_dropout_prob; pass dropout=")
    return float(rate)


def mc_head_marginals(
    tagger: StudentTagger,
    texts: Sequence[str],
    passes: int = 10,
    *,
    dropout: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """Per text, a `(passes, n_words, n_labels)` float32 array of word marginals under head dropout.

    `dropout` defaults to the head's training rate (`head_dropout_rate`, 0.1 for MiniLM). Rows are
    softmax distributions at word-initial subwords, aligned with `tagger.word_marginals(texts)`.
    """
    if passes < 2:
        raise ValueError(f"passes must be at least 2 (BALD compares passes), got {passes}")
    model = tagger.model
    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no .classifier head; MC head dropout needs one")
    rate = head_dropout_rate(model) if dropout is None else float(dropout)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {rate}")
    n_labels = len(tagger.labels)
    o_row = np.zeros(n_labels, dtype=np.float32)
    o_row[tagger.label2id["O"]] = 1.0
    encoded = tagger.encode_texts(texts)
    out: list[np.ndarray] = [np.empty((passes, len(e.words), n_labels), np.float32) for e in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # pad to similar widths
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                batch = tagger.collate([encoded[i] for i in idx])
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                hidden = model.base_model(**inputs).last_hidden_state  # (B, S, H), one encoder pass
                firsts = [np.asarray(encoded[i].word_first, dtype=np.int64) for i in idx]
                rows = [hidden[r, torch.as_tensor(f[f >= 0], device=device)] for r, f in enumerate(firsts)]
                h = torch.cat(rows, dim=0) if rows else hidden.new_zeros((0, hidden.shape[-1]))
                probs = np.empty((passes, h.shape[0], n_labels), np.float32)
                for t in range(passes):
                    keep = (torch.rand(h.shape, generator=gen) >= rate).to(device=device, dtype=h.dtype)
                    logits = head(h * keep / (1.0 - rate))
                    probs[t] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                pos = 0
                for i, f in zip(idx, firsts, strict=True):
                    seen = f >= 0
                    arr = np.broadcast_to(o_row, (passes, f.size, n_labels)).copy()
                    arr[:, seen] = probs[:, pos : pos + int(seen.sum())]
                    pos += int(seen.sum())
                    out[i] = arr
    finally:
        model.train(was_training)
    return out
