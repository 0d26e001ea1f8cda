"""Read NER corpora in the `../shared/data` format: one `{"tokens", "tags"}` object per line."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.spans import Span, bio_to_spans


@dataclass
class Example:
    """One sentence: its id, its text and its (gold or LLM) spans."""

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    tokens: list[str] | None = None


def load_split(path: str | Path, limit: int | None = None) -> list[Example]:
    """Load one `.jsonl` split. Ids are `<split>-<line number>`; a bad line raises with its number."""
    path = Path(path)
    examples: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, spans = bio_to_spans(row["tokens"], row["tags"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno + 1}: not a tokens/tags record ({exc})") from exc
            examples.append(Example(f"{path.stem}-{lineno}", text, spans, list(row["tokens"])))
    return examples


def load_dataset(data_dir: str | Path) -> dict[str, list[Example]]:
    """Load every split (`train`, `dev`, `test`) present in a dataset folder."""
    data_dir = Path(data_dir)
    splits = {p.stem: load_split(p) for p in sorted(data_dir.glob("*.jsonl"))}
    if not splits:
        raise FileNotFoundError(f"no *.jsonl splits in {data_dir}")
    return splits


def label_set(examples: Sequence[Example]) -> list[str]:
    """Sorted entity types that occur in the examples."""
    return sorted({s.label for ex in examples for s in ex.spans})


def sample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """A reproducible random subset (all of them when `n` is None or too large)."""
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(list(examples), n)
