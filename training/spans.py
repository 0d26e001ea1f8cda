"""Character-offset entity spans and conversions from token-level BIO data.

A `Span` is the one currency every layer trades in: the LLM annotator grounds
replies into spans, the student predicts spans, Label Studio regions are spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Span:
    """A labelled character range `[start, end)` of a text."""

    start: int
    end: int
    label: str
    score: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid span offsets [{self.start}, {self.end})")

    def text_in(self, text: str) -> str:
        return text[self.start : self.end]

    def key(self) -> tuple[int, int, str]:
        return (self.start, self.end, self.label)


def tokens_to_text(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join tokens with single spaces; return the text and each token's char range."""
    offsets: list[tuple[int, int]] = []
    pos = 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def bio_to_token_chunks(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Decode IOB2 tags into `(first_token, last_token_exclusive, label)` chunks.

    An `I-X` that does not continue an `X` chunk starts a new chunk (the lenient,
    conlleval-compatible reading), so malformed sequences never lose an entity.
    """
    chunks: list[tuple[int, int, str]] = []
    start: int | None = None
    label: str | None = None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, typ = tag.partition("-")
        continues = prefix == "I" and typ == label and start is not None
        if start is not None and not continues:
            chunks.append((start, i, label or ""))
            start, label = None, None
        if prefix in ("B", "I") and not continues:
            start, label = i, typ
    return chunks


def bio_to_spans(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, list[Span]]:
    """Convert a tokenised IOB2 sentence into (text, character spans)."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    text, offsets = tokens_to_text(tokens)
    spans = [
        Span(offsets[a][0], offsets[b - 1][1], label) for a, b, label in bio_to_token_chunks(tags)
    ]
    return text, spans


def spans_to_token_bio(
    token_offsets: Sequence[tuple[int, int]], spans: Iterable[Span]
) -> list[str]:
    """Project character spans onto tokens (by overlap) as IOB2 tags.

    Spans are applied longest first and a token keeps its first tag, so adjacent
    entities stay separate (each starts with its own `B-`).
    """
    tags = ["O"] * len(token_offsets)
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        idx = [i for i, (a, b) in enumerate(token_offsets) if a < span.end and b > span.start]
        if not idx or any(tags[i] != "O" for i in idx):
            continue
        tags[idx[0]] = f"B-{span.label}"
        for i in idx[1:]:
            tags[i] = f"I-{span.label}"
    return tags


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Flat NER: keep the longest of overlapping spans (ties: earliest, then label)."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start, s.label)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept)
