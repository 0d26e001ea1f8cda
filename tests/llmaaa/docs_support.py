"""Helpers for the document tests: tiny random-init taggers, a context-free lexicon tagger, a fake Label Studio."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from training.encoder import default_encoder_path
from training.model import StudentTagger, bio_labels, word_offsets

TYPES = ("Chemical", "Disease")


def make_tiny_encoder(path: Path) -> Path:
    """A 2-layer, 32-d BERT (random init, seed 0) with the MiniLM uncased WordPiece tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_tagger(encoder: Path, max_length: int = 64, seed: int = 1) -> StudentTagger:
    """Untrained, so its tags are arbitrary but deterministic: fine wherever only consistency matters."""
    torch.manual_seed(seed)
    return StudentTagger.from_pretrained(list(TYPES), encoder=encoder, max_length=max_length)


class LexiconTagger:
    """A stand-in student whose tag for a word depends on the word alone (no context), so a chunked
    passage must come out exactly as the unchunked one. It uses the real tokenizer and window limit, and
    fails loudly when given a text longer than its window (a real tagger would silently truncate)."""

    decode = StudentTagger.decode  # the real decoding (it only reads self.labels)

    def __init__(self, lexicon: Mapping[str, tuple[str, float]], max_length: int = 512,
                 tokenizer: Any = None) -> None:
        self.lexicon = {k.lower(): v for k, v in lexicon.items()}
        self.max_length = max_length
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(default_encoder_path())
        self.labels = bio_labels(TYPES)
        self.entity_types = list(TYPES)
        self.calls: list[list[str]] = []

    def _row(self, word: str) -> np.ndarray:
        tag, p = self.lexicon.get(word.lower().strip(".,;:()"), ("O", 0.97))
        row = np.full(len(self.labels), (1.0 - p) / (len(self.labels) - 1), dtype=np.float32)
        row[self.labels.index(tag)] = p
        return row

    def word_marginals(self, texts: Sequence[str], batch_size: int = 32) -> list[np.ndarray]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            n_sub = len(self.tokenizer(text)["input_ids"])
            assert n_sub <= self.max_length, f"a window of {n_sub} subwords exceeds max_length {self.max_length}"
            rows = [self._row(text[a:b]) for a, b in word_offsets(text)]
            out.append(np.array(rows, dtype=np.float32).reshape(len(rows), len(self.labels)))
        return out


class FakeLabelStudio:
    """The two SDK calls task import uses: `tasks.list(project, fields)` and `projects.import_tasks(id, request)`."""

    def __init__(self) -> None:
        self.rows: dict[int, list[dict[str, Any]]] = {}
        self.import_calls = 0
        self.tasks = SimpleNamespace(list=self._list)
        self.projects = SimpleNamespace(import_tasks=self._import)

    def count(self, project: int) -> int:
        return len(self.rows.get(project, []))

    def _list(self, project: int, fields: str = "all") -> Iterator[dict[str, Any]]:
        for i, data in enumerate(self.rows.get(project, [])):
            yield {"id": i + 1, "data": data}

    def _import(self, id: int, request: list[dict[str, Any]]) -> None:  # noqa: A002 - the SDK's name
        self.import_calls += 1
        self.rows.setdefault(id, []).extend(dict(t) for t in request)
