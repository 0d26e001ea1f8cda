"""The noise model: gold at noise 0, legal spans always, deterministic, rates as documented."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmaaa.simulation.noise import BOUNDARY_AT_1, MISS_AT_1, SPURIOUS_AT_1, TYPE_AT_1, NoiseModel, NoiseRates
from training.data import Example, label_set, load_split
from training.spans import Span, tokens_to_text


@pytest.fixture(scope="module")
def dev(bc5cdr_dir: Path) -> list[Example]:
    return load_split(bc5cdr_dir / "dev.jsonl", limit=1500)


def strict_f1(gold: list[list[Span]], pred: list[list[Span]]) -> float:
    g = {(i, *s.key()) for i, spans in enumerate(gold) for s in spans}
    p = {(i, *s.key()) for i, spans in enumerate(pred) for s in spans}
    tp = len(g & p)
    return 2 * tp / (len(g) + len(p)) if g or p else 1.0


def run(model: NoiseModel, examples: list[Example]) -> list[list[Span]]:
    return [model.corrupt(ex.text, ex.spans) for ex in examples]


def test_noise_zero_returns_exactly_gold(dev: list[Example]) -> None:
    model = NoiseModel(label_set(dev), noise=0.0, seed=3)
    assert run(model, dev) == [sorted(ex.spans) for ex in dev]


def test_rates_are_the_documented_linear_functions_of_noise() -> None:
    assert NoiseRates.from_noise(0.0) == NoiseRates(0.0, 0.0, 0.0, 0.0)
    r = NoiseRates.from_noise(0.5)
    assert r == NoiseRates(MISS_AT_1 * 0.5, TYPE_AT_1 * 0.5, BOUNDARY_AT_1 * 0.5, SPURIOUS_AT_1 * 0.5)
    assert all(0 < x <= 1 for x in (r.miss, r.wrong_type, r.boundary, r.spurious))
    for bad in (-0.1, 1.01):
        with pytest.raises(ValueError):
            NoiseRates.from_noise(bad)


def test_f1_falls_as_noise_rises(dev: list[Example]) -> None:
    labels = label_set(dev)
    gold = [ex.spans for ex in dev]
    f1 = [strict_f1(gold, run(NoiseModel(labels, n, seed=0), dev)) for n in (0.0, 0.2, 0.4, 0.6, 0.8)]
    assert f1[0] == 1.0
    assert all(a > b for a, b in zip(f1, f1[1:], strict=False)), f1
    assert f1[4] < 0.5 < f1[1] < 0.95, f1  # the knob spans weak to good teachers


def test_every_error_kind_occurs(dev: list[Example]) -> None:
    model = NoiseModel(label_set(dev), noise=1.0, seed=0)
    kinds = {"missed": 0, "type": 0, "boundary": 0, "spurious": 0}
    for ex in dev[:400]:
        out = model.corrupt(ex.text, ex.spans)
        for g in ex.spans:
            hit = [s for s in out if s.start < g.end and s.end > g.start]
            kinds["missed"] += not hit
            kinds["type"] += any(s.label != g.label for s in hit)
            kinds["boundary"] += any((s.start, s.end) != (g.start, g.end) for s in hit)
        kinds["spurious"] += sum(not any(s.start < g.end and s.end > g.start for g in ex.spans) for s in out)
    assert all(v > 20 for v in kinds.values()), kinds


def test_miss_rate_matches_the_documented_rate(dev: list[Example]) -> None:
    # Only a miss removes every answer overlapping a gold entity: boundary moves keep >= 1 of its
    # tokens and spurious spans never touch entity tokens.
    noise = 0.6
    model = NoiseModel(label_set(dev), noise=noise, seed=11)
    total = missed = 0
    for ex in dev:
        out = model.corrupt(ex.text, ex.spans)
        for g in ex.spans:
            total += 1
            missed += not any(s.start < g.end and s.end > g.start for s in out)
    expected = MISS_AT_1 * noise
    sigma = (expected * (1 - expected) / total) ** 0.5
    assert abs(missed / total - expected) < 4 * sigma, (missed / total, expected, total)


def test_deterministic_per_seed_and_text(dev: list[Example]) -> None:
    labels = label_set(dev)
    a = run(NoiseModel(labels, 0.5, seed=7), dev[:300])
    assert a == run(NoiseModel(labels, 0.5, seed=7), dev[:300])
    # The answer depends on the sentence, not on what was asked before it.
    assert a[::-1] == run(NoiseModel(labels, 0.5, seed=7), dev[:300][::-1])
    other = run(NoiseModel(labels, 0.5, seed=8), dev[:300])
    assert sum(x != y for x, y in zip(a, other, strict=True)) > 30


def test_demo_aware_answers_demo_entities_correctly(dev: list[Example]) -> None:
    labels = label_set(dev)
    aware = NoiseModel(labels, noise=1.0, seed=0, demo_aware=True)
    blind = NoiseModel(labels, noise=1.0, seed=0, demo_aware=False)
    blind_lost = 0
    for ex in dev[:300]:
        seen = {ex.text[s.start : s.end] for s in ex.spans[::2]}  # every other entity was in a demo
        expected = {s for s in ex.spans if ex.text[s.start : s.end] in seen}
        assert expected <= set(aware.corrupt(ex.text, ex.spans, seen))
        blind_lost += len(expected - set(blind.corrupt(ex.text, ex.spans, seen)))
    assert blind_lost > 50  # the flag, not luck, kept them


def test_single_label_dataset_never_changes_type() -> None:
    tokens = ["Aspirin", "and", "ibuprofen", "relieve", "pain", "."]
    text, offsets = tokens_to_text(tokens)
    gold = [Span(*offsets[0], "Chemical"), Span(*offsets[2], "Chemical")]
    for seed in range(50):
        assert {s.label for s in NoiseModel(["Chemical"], 1.0, seed).corrupt(text, gold)} <= {"Chemical"}


# Empty tokens (from double spaces) included: nothing may start or end on one.
TOKENS = st.lists(st.text(alphabet="abcXYZ09-.,()'µ", min_size=0, max_size=6), min_size=1, max_size=25)


@st.composite
def sentences(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]], list[Span]]:
    tokens = draw(TOKENS)
    text, offsets = tokens_to_text(tokens)
    spans: list[Span] = []
    i = 0
    while i < len(tokens):
        j = min(len(tokens), i + draw(st.integers(1, 3)))
        if tokens[i] and tokens[j - 1] and draw(st.booleans()):
            spans.append(Span(offsets[i][0], offsets[j - 1][1], draw(st.sampled_from(["A", "B", "C"]))))
            i = j + draw(st.integers(0, 2))
        else:
            i += 1
    return text, offsets, spans


@settings(max_examples=300, deadline=None)
@given(sentences(), st.floats(0, 1), st.integers(0, 2**32), st.booleans())
def test_answers_are_legal_token_spans(sentence: tuple[str, list[tuple[int, int]], list[Span]],
                                       noise: float, seed: int, demo_aware: bool) -> None:
    text, offsets, gold = sentence
    model = NoiseModel(["A", "B", "C"], noise, seed, demo_aware)
    out = model.corrupt(text, gold, {text[s.start : s.end] for s in gold[:1]})
    starts, ends = {a for a, b in offsets if b > a}, {b for a, b in offsets if b > a}
    for s in out:
        assert 0 <= s.start < s.end <= len(text)
        assert s.start in starts and s.end in ends, (s, text)
        assert s.label in {"A", "B", "C"}
        assert text[s.start : s.end] == text[s.start : s.end].strip() != ""
    assert all(a.end <= b.start for a, b in zip(out, out[1:], strict=False)), out  # sorted, no overlaps
    for s in out:
        # An answer touching a gold entity comes from it: one side kept (boundary errors move one side);
        # spurious spans never touch entity tokens.
        touched = [g for g in gold if s.start < g.end and s.end > g.start]
        assert len(touched) <= 1 and all(s.start == g.start or s.end == g.end for g in touched), (s, gold)
    if noise == 0:
        assert out == sorted(gold)


def test_boundary_errors_never_end_on_an_empty_token() -> None:
    # "a  b" has an empty token between "a" and "b": cutting one token off must not leave a space edge.
    tokens = ["x", "aa", "", "bb", "", "cc", "y"]
    text, offsets = tokens_to_text(tokens)
    gold = [Span(offsets[1][0], offsets[5][1], "A")]
    edges = set()
    for seed in range(300):
        for s in NoiseModel(["A", "B"], 1.0, seed).corrupt(text, gold):
            assert text[s.start : s.end] == text[s.start : s.end].strip(), (seed, s)
            edges.add((s.start, s.end))
    assert len(edges) > 3  # boundary errors did happen


def test_spurious_spans_cover_only_non_entity_tokens(dev: list[Example]) -> None:
    model = NoiseModel(label_set(dev), noise=1.0, seed=0)
    model.rates = NoiseRates(miss=1.0, wrong_type=0.0, boundary=0.0, spurious=1.0)  # only spurious spans left
    lengths: Counter[int] = Counter()
    for ex in dev[:500]:
        for s in model.corrupt(ex.text, ex.spans):
            assert not any(s.start < g.end and s.end > g.start for g in ex.spans), (s, ex.text)
            lengths[len(ex.text[s.start : s.end].split(" "))] += 1
    assert set(lengths) == {1, 2, 3}, lengths
