"""entity_scores: seqeval strict IOB2 over words == exact span-set micro P/R/F1."""

from __future__ import annotations

import random

import pytest

from training.data import load_split
from training.metrics import entity_scores
from training.model import word_offsets
from training.spans import Span


def span_set_scores(gold: list[list[Span]], pred: list[list[Span]]) -> tuple[float, float, float]:
    g = {(i, *s.key()) for i, spans in enumerate(gold) for s in spans}
    p = {(i, *s.key()) for i, spans in enumerate(pred) for s in spans}
    tp = len(g & p)
    prec = tp / len(p) if p else 0.0
    rec = tp / len(g) if g else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if tp else 0.0)


def perturb(text: str, spans: list[Span], rng: random.Random) -> list[Span]:
    """Drop, retype, shrink/grow by a word, or split spans; add spurious ones (all word-aligned)."""
    words = word_offsets(text)
    starts = {a: i for i, (a, _) in enumerate(words)}
    out = []
    for s in spans:
        r = rng.random()
        i = starts[s.start]
        j = next(k for k, (_, b) in enumerate(words) if b == s.end)
        if r < 0.15:
            continue
        if r < 0.3:
            out.append(Span(s.start, s.end, "Disease" if s.label == "Chemical" else "Chemical"))
        elif r < 0.4 and j + 1 < len(words):
            out.append(Span(s.start, words[j + 1][1], s.label))
        elif r < 0.5 and j > i:
            out += [Span(s.start, words[i][1], s.label), Span(words[i + 1][0], s.end, s.label)]
        else:
            out.append(s)
    if rng.random() < 0.3:
        k = rng.randrange(len(words))
        if all(words[k][1] <= s.start or words[k][0] >= s.end for s in out):
            out.append(Span(*words[k], "Chemical"))
    return out


def test_equals_span_set_micro_f1_on_corpus_examples(bc5cdr_dir) -> None:
    examples = load_split(bc5cdr_dir / "dev.jsonl", limit=200)
    rng = random.Random(3)
    texts = [ex.text for ex in examples]
    gold = [ex.spans for ex in examples]
    pred = [perturb(ex.text, ex.spans, rng) for ex in examples]
    assert pred != gold
    scores = entity_scores(gold, pred, texts)
    p, r, f = span_set_scores(gold, pred)
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((p, r, f))
    assert 0.3 < f < 0.95
    for label in ("Chemical", "Disease"):
        pt = entity_scores([[s for s in g if s.label == label] for g in gold],
                           [[s for s in q if s.label == label] for q in pred], texts)
        assert scores["per_type"][label]["f1"] == pytest.approx(pt["f1"])
        assert scores["per_type"][label]["support"] == sum(s.label == label for g in gold for s in g)


def test_strict_boundaries_adjacency_and_empty() -> None:
    text = "aspirin ibuprofen caused fever"
    gold = [[Span(0, 7, "Chemical"), Span(8, 17, "Chemical"), Span(25, 30, "Disease")]]
    merged = [[Span(0, 17, "Chemical"), Span(25, 30, "Disease")]]
    s = entity_scores(gold, merged, [text])
    assert (s["precision"], s["recall"]) == pytest.approx((0.5, 1 / 3))
    assert entity_scores(gold, gold, [text])["f1"] == 1.0
    assert entity_scores([[]], [[]], ["nothing here"])["f1"] == 0.0
    with pytest.raises(ValueError):
        entity_scores(gold, [], [text])
