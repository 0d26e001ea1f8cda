"""What the simulation reports about learned sentence weights versus the teacher's known errors."""

from __future__ import annotations

import pytest

from llmaaa.simulate import same_spans, weight_diagnostics
from training.data import Example
from training.spans import Span


def test_weights_that_separate_wrong_labels_perfectly() -> None:
    # batch size 4: a mean weight of 0.25 is an average share (relative weight 1.0)
    weights = {"a": 0.5, "b": 0.25, "c": 0.0, "d": 0.125}
    correct = {"a": True, "b": True, "c": False, "d": False}
    d = weight_diagnostics(weights, correct, batch_size=4, skipped_batches=1, steps=4)
    assert d["sentences"] == 4
    assert d["wrong_label_share"] == 0.5
    assert d["zero_weight_share"] == 0.25
    assert d["mean_relative_weight_correct"] == pytest.approx(1.5)   # (2.0 + 1.0) / 2
    assert d["mean_relative_weight_wrong"] == pytest.approx(0.25)    # (0.0 + 0.5) / 2
    assert d["auc"] == 1.0
    assert d["skipped_batch_share"] == 0.25


def test_weights_that_favour_wrong_labels_and_undefined_auc() -> None:
    d = weight_diagnostics({"a": 0.0, "b": 0.3}, {"a": True, "b": False}, batch_size=2, skipped_batches=0, steps=2)
    assert d["auc"] == 0.0
    only_correct = weight_diagnostics({"a": 0.1}, {"a": True}, batch_size=2, skipped_batches=0, steps=0)
    assert only_correct["auc"] is None and only_correct["mean_relative_weight_wrong"] is None
    assert only_correct["skipped_batch_share"] is None


def test_auc_without_entity_free_sentences_and_by_votes() -> None:
    # "e" has no gold entity: right and light, as such sentences are; the others are mostly wrong and heavy.
    weights = {"a": 0.4, "b": 0.1, "c": 0.3, "e": 0.05}
    correct = {"a": True, "b": False, "c": False, "e": True}
    votes = {"a": 0.9, "b": 0.2, "c": 0.4, "e": 0.6}  # how often each got a positive weight
    d = weight_diagnostics(weights, correct, batch_size=4, skipped_batches=0, steps=4, positive_shares=votes,
                           has_entities={"a": True, "b": True, "c": True, "e": False})
    assert d["auc"] == 0.5  # "e" drags it down
    assert d["auc_with_entities"] == 1.0 and d["auc_positive_share"] == 1.0
    assert "auc_positive_share" not in weight_diagnostics(weights, correct, 4, 0, 4)


def test_same_spans_ignores_order_and_score() -> None:
    gold = Example("x", "aspirin and fever", [Span(0, 7, "Chemical"), Span(12, 17, "Disease")])
    shuffled = Example("x", gold.text, [Span(12, 17, "Disease", score=0.4), Span(0, 7, "Chemical")])
    relabelled = Example("x", gold.text, [Span(0, 7, "Disease"), Span(12, 17, "Disease")])
    assert same_spans(gold, shuffled)
    assert not same_spans(gold, relabelled)
