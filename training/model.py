"""The student: a token-classification transformer that reads and writes character spans.

Words are whitespace-delimited (`\\S+`). Each word is tagged (IOB2) on its first subword only; the
other subwords and the special tokens get label -100, so neither the loss nor the marginals see them.
Character spans map to word tags with `spans_to_token_bio` over the word offsets, and predicted word
tags map back to spans with `bio_to_token_chunks`, so two adjacent entities stay two spans.

Truncation: a text is cut at `max_length` subwords (specials included). Words whose first subword
falls beyond the cut, and words the tokenizer drops entirely (e.g. a lone zero-width space), are
predicted `O` with probability 1: their marginal row is the one-hot `O` vector.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from training.data import Example
from training.device import mixed_precision, resolve_device
from training.encoder import configure_threads, resolve_encoder
from training.spans import Span, bio_to_token_chunks, spans_to_token_bio

LABELS_FILE = "labels.json"
IGNORE_INDEX = -100
_WORD = re.compile(r"\S+")


def bio_labels(entity_types: Sequence[str]) -> list[str]:
    """`O` then `B-X`, `I-X` for each type in sorted order (so the label ids are reproducible)."""
    types = sorted(set(entity_types))
    if any(not t or t.startswith(("B-", "I-")) or t == "O" for t in types):
        raise ValueError(f"entity types must be bare names like 'Chemical', got {types}")
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Character ranges of the whitespace-delimited words of `text`."""
    return [m.span() for m in _WORD.finditer(text)]


@dataclass
class PoolOutputs:
    """Per-text word marginals `(n_words, n_labels)` and unit-norm mean-pooled embeddings `(n, hidden)`."""

    marginals: list[np.ndarray]
    embeddings: np.ndarray


@dataclass
class EncodedText:
    """One tokenised text: subword ids, the subword index of each word's first subword (-1 if none)."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    word_first: list[int]
    words: list[tuple[int, int]]
    labels: list[int] | None = None  # per subword, IGNORE_INDEX except on word-initial subwords

    def __len__(self) -> int:
        return len(self.input_ids)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the expected 'classifier newly initialised' report and the weight-loading bar."""
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _as_device(device: str | torch.device | None) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


class StudentTagger:
    """A local `AutoModelForTokenClassification` checkpoint with IOB2 labels over entity types."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: Any, labels: Sequence[str], max_length: int = 256
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast tokenizer is required (its offset mapping aligns subwords to words)")
        if max_length < 3:
            raise ValueError("max_length must leave room for at least one word besides the specials")
        configure_threads()
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label2id = {lab: i for i, lab in enumerate(self.labels)}
        self.max_length = max_length
        self._o_row = np.zeros(len(self.labels), dtype=np.float32)
        self._o_row[self.label2id["O"]] = 1.0
        self._lock = threading.Lock()  # a web backend may score from several threads at once

    # ----------------------------------------------------------------- construction and persistence
    @classmethod
    def from_pretrained(
        cls,
        entity_types: Sequence[str],
        encoder: str | Path | None = None,
        max_length: int = 256,
        attn_implementation: str | None = None,
        device: str | torch.device = "cpu",
    ) -> StudentTagger:
        """A fresh head (random init from the current torch seed) on a pretrained local encoder.

        `device` is "cpu" by default (a name for `training.device.resolve_device`, or a torch device);
        the head is drawn on the CPU first, so the same seed gives the same head on every device.
        """
        path = resolve_encoder(encoder)
        labels = bio_labels(entity_types)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForTokenClassification.from_pretrained(
                path,
                local_files_only=True,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={lab: i for i, lab in enumerate(labels)},
                ignore_mismatched_sizes=True,  # an existing tagger with other labels is a valid encoder
                **kwargs,
            )
        return cls(model.eval().to(_as_device(device)), tokenizer, labels, max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> StudentTagger:
        """Move the model (in place) to `device`; returns self."""
        self.model.to(_as_device(device))
        return self

    def save(self, directory: str | Path) -> None:
        """Write model, tokenizer and `labels.json` into `directory` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        meta = {"labels": self.labels, "max_length": self.max_length}
        (directory / LABELS_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> StudentTagger:
        """Load a saved tagger onto `device` (None: `STUDENT_DEVICE`, default auto = CUDA if available).

        `from_pretrained` reads the weights onto the CPU (its map location), whatever device they were
        trained on, and only then are they moved, so a GPU-trained model loads on a CPU-only server.
        """
        directory = Path(directory)
        meta = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
        target = _as_device(device)
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModelForTokenClassification.from_pretrained(
                directory, local_files_only=True
            )
        if model.config.num_labels != len(meta["labels"]):
            raise ValueError(f"{directory}: {LABELS_FILE} has {len(meta['labels'])} labels, model has "
                             f"{model.config.num_labels}")
        return cls(model.eval().to(target), tokenizer, meta["labels"], int(meta.get("max_length", 256)))

    @property
    def entity_types(self) -> list[str]:
        return [lab[2:] for lab in self.labels if lab.startswith("B-")]

    # ------------------------------------------------------------------------------------ encoding
    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        """Tokenise (truncating at `max_length`) and locate each word's first subword."""
        if not texts:
            return []
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        out: list[EncodedText] = []
        for i, text in enumerate(texts):
            words = word_offsets(text)
            ends = [b for _, b in words]
            first = [-1] * len(words)
            for pos, ((a, b), special) in enumerate(
                zip(enc["offset_mapping"][i], enc["special_tokens_mask"][i], strict=True)
            ):
                if special or b <= a:
                    continue
                # The first word ending after the subword's start; tokenizers that keep a leading
                # space in offsets (byte-level BPE without trimming) still land on the right word.
                w = bisect_right(ends, a)
                if w < len(words) and words[w][0] < b and first[w] < 0:
                    first[w] = pos
            token_types = enc["token_type_ids"][i] if "token_type_ids" in enc else None
            out.append(EncodedText(list(enc["input_ids"][i]), token_types, first, words))
        return out

    def encode_examples(self, examples: Sequence[Example]) -> list[EncodedText]:
        """Encode texts plus their gold/LLM spans as subword labels (word-initial subwords only)."""
        encoded = self.encode_texts([ex.text for ex in examples])
        for ex, item in zip(examples, encoded, strict=True):
            tags = spans_to_token_bio(item.words, ex.spans)
            labels = [IGNORE_INDEX] * len(item)
            for w, tag in enumerate(tags):
                if item.word_first[w] >= 0:
                    if tag not in self.label2id:
                        raise ValueError(f"example {ex.id}: label {tag!r} not in {self.labels}")
                    labels[item.word_first[w]] = self.label2id[tag]
            item.labels = labels
        return encoded

    def collate(self, items: Sequence[EncodedText]) -> dict[str, torch.Tensor]:
        """Pad to the longest item in the batch (dynamic padding)."""
        width = max(len(it) for it in items)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for r, it in enumerate(items):
            ids[r, : len(it)] = torch.tensor(it.input_ids)
            mask[r, : len(it)] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if all(it.token_type_ids is not None for it in items):
            types = torch.zeros((len(items), width), dtype=torch.long)
            for r, it in enumerate(items):
                types[r, : len(it)] = torch.tensor(it.token_type_ids)
            batch["token_type_ids"] = types
        if all(it.labels is not None for it in items):
            labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
            for r, it in enumerate(items):
                labels[r, : len(it)] = torch.tensor(it.labels)
            batch["labels"] = labels
        return batch

    # ----------------------------------------------------------------------------------- inference
    def _infer(
        self, texts: Sequence[str], batch_size: int, with_embeddings: bool
    ) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Word marginals (and pooled embeddings) for every text, in input order, in one pass."""
        return self.infer_encoded(self.encode_texts(texts), batch_size, with_embeddings)

    def infer_encoded(
        self, encoded: Sequence[EncodedText], batch_size: int = 32, with_embeddings: bool = False
    ) -> tuple[list[np.ndarray], np.ndarray | None]:
        """`_infer` on texts tokenised already (the trainer's dev set is tokenised once, not per epoch)."""
        marginals: list[np.ndarray] = [np.empty((0, len(self.labels)), np.float32)] * len(encoded)
        hidden = int(self.model.config.hidden_size)
        embeddings = np.zeros((len(encoded), hidden), dtype=np.float32) if with_embeddings else None
        # Length bucketing: neighbours in sorted order pad to nearly the same width.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        with self._lock:
            was_training = self.model.training
            self.model.eval()
            try:
                self._infer_batches(encoded, order, batch_size, marginals, embeddings)
            finally:
                self.model.train(was_training)
        return marginals, embeddings

    def _infer_batches(
        self,
        encoded: Sequence[EncodedText],
        order: Sequence[int],
        batch_size: int,
        marginals: list[np.ndarray],
        embeddings: np.ndarray | None,
    ) -> None:
        """Fill `marginals` (and `embeddings`) in place, batch by batch in `order`."""
        device = self.device
        with torch.inference_mode(), mixed_precision(device):
            for s in range(0, len(order), batch_size):
                idx = list(order[s : s + batch_size])
                batch = {k: v.to(device) for k, v in self.collate([encoded[i] for i in idx]).items()}
                out = self.model(**batch, output_hidden_states=embeddings is not None)
                probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
                for r, i in enumerate(idx):
                    first = np.asarray(encoded[i].word_first, dtype=np.int64)
                    rows = np.tile(self._o_row, (len(first), 1))
                    seen = first >= 0
                    rows[seen] = probs[r, first[seen]]
                    marginals[i] = rows
                if embeddings is not None:
                    last = out.hidden_states[-1]
                    mask = batch["attention_mask"].unsqueeze(-1).to(last.dtype)
                    pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                    embeddings[idx] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()

    def decode(self, text: str, marginals: np.ndarray) -> list[Span]:
        """Argmax tag per word, IOB2 chunks over words, one span per chunk.

        A span's `score` is the mean, over its words, of the probability of the tag chosen for
        each word (B-X on the first word, I-X on the rest): a confidence in the whole entity.
        """
        words = word_offsets(text)
        if len(words) != len(marginals):
            raise ValueError(f"{len(marginals)} marginal rows for {len(words)} words")
        if not words:
            return []
        best = marginals.argmax(axis=1)
        tags = [self.labels[j] for j in best]
        spans = []
        for a, b, label in bio_to_token_chunks(tags):
            score = float(marginals[np.arange(a, b), best[a:b]].mean())
            spans.append(Span(words[a][0], words[b - 1][1], label, score=score))
        return spans

    def word_marginals(self, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray]:
        """Per text, a (words, labels) array of tag probabilities at word-initial subwords (see `decode`).

        What `predict` decodes; for callers that stitch or calibrate before decoding (`llmaaa extract`).
        """
        marginals, _ = self._infer(texts, batch_size, with_embeddings=False)
        return marginals

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[list[Span]]:
        """Predicted character spans (with scores) for each text."""
        marginals = self.word_marginals(texts, batch_size)
        return [self.decode(t, m) for t, m in zip(texts, marginals, strict=True)]

    def pool_outputs(self, texts: Sequence[str], batch_size: int = 32) -> PoolOutputs:
        """Word marginals and L2-normalised mean-pooled last hidden states, from one batched pass.

        Marginals are the softmax at word-initial subwords only (no specials, no continuation
        subwords); the embedding mean-pools every non-pad position, specials included, like the
        sentence embedder does.
        """
        marginals, embeddings = self._infer(texts, batch_size, with_embeddings=True)
        assert embeddings is not None
        return PoolOutputs(marginals, embeddings)

    def predict_and_pool(
        self, texts: Sequence[str], batch_size: int = 32
    ) -> tuple[list[list[Span]], PoolOutputs]:
        """Both of the above from the same single pass (a backend scoring a pool wants both)."""
        marginals, embeddings = self._infer(texts, batch_size, with_embeddings=True)
        assert embeddings is not None
        spans = [self.decode(t, m) for t, m in zip(texts, marginals, strict=True)]
        return spans, PoolOutputs(marginals, embeddings)
