"""Entity-level scores: seqeval in strict IOB2 mode over whitespace-word tags.

Both gold and predicted character spans are projected onto the words of the text with
`spans_to_token_bio`, so two systems that agree on which words an entity covers score as a match.
For word-aligned spans (everything the student predicts, and every corpus span here) this is exact
span-set micro P/R/F1.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from training.model import word_offsets
from training.spans import Span, spans_to_token_bio


def word_tags(text: str, spans: Sequence[Span]) -> list[str]:
    """IOB2 tags of the whitespace words of `text` for the given character spans."""
    return spans_to_token_bio(word_offsets(text), spans)


def entity_scores(
    gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]], texts: Sequence[str]
) -> dict[str, Any]:
    """Micro precision/recall/F1 and per-type scores (`precision`, `recall`, `f1`, `support`).

    With no entity on either side every score is 0.0 (seqeval's `zero_division=0`).
    """
    if not len(gold) == len(pred) == len(texts):
        raise ValueError(f"{len(gold)} gold, {len(pred)} predicted and {len(texts)} texts")
    y_true = [word_tags(t, g) for t, g in zip(texts, gold, strict=True)]
    y_pred = [word_tags(t, p) for t, p in zip(texts, pred, strict=True)]
    kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on empty classes even with zero_division set
        report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
        scores: dict[str, Any] = {
            "precision": float(precision_score(y_true, y_pred, **kwargs)),
            "recall": float(recall_score(y_true, y_pred, **kwargs)),
            "f1": float(f1_score(y_true, y_pred, **kwargs)),
        }
    scores["per_type"] = {
        label: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for label, row in report.items()
        if not label.endswith(" avg")
    }
    return scores
