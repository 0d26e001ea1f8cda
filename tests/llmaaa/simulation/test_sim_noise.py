"""The noise model: gold at noise 0, legal spans always, deterministic, rates as documented."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmaaa.simulation.noise import (
    BOUNDARY_AT_1,
    CALIBRATION_TARGETS,
    DOMINANT_CONFUSION,
    MISS_AT_1,
    NOISE_KINDS,
    SPURIOUS_AT_1,
    TYPE_AT_1,
    NoiseModel,
    NoiseRates,
    SystematicNoiseModel,
    SystematicRates,
    calibrated_noise,
    form_key,
    hallucination_candidate,
    make_noise_model,
    token_offsets,
)
from training.data import Example, label_set, load_split
from training.spans import Span, tokens_to_text


@pytest.fixture(scope="module")
def dev(bc5cdr_dir: Path) -> list[Example]:
    return load_split(bc5cdr_dir / "dev.jsonl", limit=1500)


@pytest.fixture(scope="module")
def conll_dev(bc5cdr_dir: Path) -> list[Example]:
    return load_split(bc5cdr_dir.parent / "conll2003" / "dev.jsonl", limit=1500)


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


# --- Systematic noise -----------------------------------------------------------------------------------


def occurrence_outcome(gold: Span, out: list[Span], offsets: list[tuple[int, int]]) -> str:
    """What the answer did with one gold entity: missed, type:<label>, boundary moves, or right."""
    hit = [s for s in out if s.start < gold.end and s.end > gold.start]
    if not hit:
        return "miss"
    (s,) = hit
    if s.label != gold.label:
        return f"type:{s.label}"
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]
    if s.start > gold.start:
        return "drop_first"
    if s.end < gold.end:
        return "drop_last"
    if s.start < gold.start or s.end > gold.end:
        # An extension that was blocked on its side moves to the other side: both count as "extend".
        assert starts.index(s.start) >= starts.index(gold.start) - 1 and ends.index(s.end) <= ends.index(gold.end) + 1
        return "extend"
    return "right"


def test_systematic_noise_zero_returns_exactly_gold(dev: list[Example]) -> None:
    model = SystematicNoiseModel(label_set(dev), noise=0.0, seed=3)
    assert run(model, dev) == [sorted(ex.spans) for ex in dev]


def test_systematic_errors_are_the_same_for_every_occurrence_of_a_form(dev: list[Example]) -> None:
    model = SystematicNoiseModel(label_set(dev), noise=0.8, seed=5)
    outcomes: dict[tuple[str, str], set[str]] = {}
    for ex in dev:
        out = model.corrupt(ex.text, ex.spans)
        offsets = token_offsets(ex.text)
        for g in ex.spans:
            surface = ex.text[g.start : g.end]
            outcome = occurrence_outcome(g, out, offsets)
            outcomes.setdefault((form_key(surface), g.label), set()).add(outcome)
            # and it is the error the model decided for the form, whatever the sentence
            error = model.form_error(surface, g.label)
            expected = {"miss": "miss", "none": "right"}.get(error.kind) or (
                f"type:{error.label}" if error.kind == "type" else
                "extend" if error.move and error.move.startswith("extend") else error.move)
            assert outcome == expected or (error.kind == "boundary" and outcome == "right"), (surface, outcome, error)
    occurrences = Counter((form_key(ex.text[g.start : g.end]), g.label) for ex in dev for g in ex.spans)
    multi = [k for k, n in occurrences.items() if n > 1]
    assert len(multi) > 50
    # one kind of outcome per form (a blocked boundary move can leave an occurrence right, nothing else)
    for k in multi:
        assert len(outcomes[k] - {"right"}) <= 1, (k, outcomes[k])
    kinds = {o.split(":")[0] for v in outcomes.values() for o in v}
    assert {"miss", "type", "drop_first", "drop_last", "extend", "right"} <= kinds, kinds


def test_systematic_form_identity_is_case_insensitive_and_independent_of_the_sentence() -> None:
    model = SystematicNoiseModel(["Chemical", "Disease"], noise=1.0, seed=2)
    forms = [f"drugname{i}" for i in range(200)]
    texts = [("Patients given {} developed nausea .", 2), ("{} was stopped .", 0)]
    for form in forms:
        seen = set()
        for template, pos in texts:
            for surface in (form, form.upper(), form.capitalize()):
                tokens = template.format(surface).split(" ")
                text, offsets = tokens_to_text(tokens)
                gold = Span(*offsets[pos], "Chemical")
                seen.add(occurrence_outcome(gold, model.corrupt(text, [gold]), offsets))
        # an extension blocked at the text's start goes right instead: still "extend"
        assert len(seen) == 1, (form, seen)


def test_systematic_type_errors_follow_a_skewed_confusion_matrix(conll_dev: list[Example]) -> None:
    labels = label_set(conll_dev)
    assert len(labels) == 4
    model = SystematicNoiseModel(labels, noise=1.0, seed=0)
    counts: dict[str, Counter[str]] = {lab: Counter() for lab in labels}
    for ex in conll_dev:
        out = model.corrupt(ex.text, ex.spans)
        for g in ex.spans:
            outcome = occurrence_outcome(g, out, token_offsets(ex.text))
            if outcome.startswith("type:"):
                counts[g.label][outcome[5:]] += 1
    for lab, row in counts.items():
        total = sum(row.values())
        assert total > 30, (lab, row)
        top, n = row.most_common(1)[0]
        assert top == model.confused_with[lab] and n / total > 0.6, (lab, row)  # not uniform (1/3 each)
        assert model.confusion(lab)[top] == DOMINANT_CONFUSION
        assert abs(sum(model.confusion(lab).values()) - 1) < 1e-9


def test_systematic_hallucinations_are_always_the_same_generic_words(dev: list[Example]) -> None:
    model = SystematicNoiseModel(label_set(dev), noise=1.0, seed=4)
    tagged: dict[str, set[str | None]] = {}
    for ex in dev:
        if ex.spans:
            continue  # no entity to extend into a word: every candidate occurrence is decided by its form alone
        out = {(s.start, s.end): s.label for s in model.corrupt(ex.text, ex.spans)}
        for a, b in token_offsets(ex.text):
            tok = ex.text[a:b]
            tagged.setdefault(form_key(tok), set()).add(out.get((a, b)))
            assert (out.get((a, b)) is None) == (model.hallucinated_label(tok) is None)
            if out.get((a, b)) is not None:
                assert hallucination_candidate(tok)
    hallucinated = [f for f, labs in tagged.items() if None not in labs]
    assert len(hallucinated) > 10
    assert all(len(tagged[f]) == 1 for f in hallucinated)  # one type per form
    assert not any(model.hallucinated_label(w) for w in ("the", "with", "(", "1996", "of"))


def systematic_f1(examples: list[Example], noise: float, seeds: tuple[int, ...]) -> float:
    labels = label_set(examples)
    gold = [ex.spans for ex in examples]
    return sum(strict_f1(gold, run(SystematicNoiseModel(labels, noise, s), examples)) for s in seeds) / len(seeds)


def test_systematic_f1_falls_monotonically_with_noise(dev: list[Example]) -> None:
    f1 = [systematic_f1(dev, n, (0, 1)) for n in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    assert f1[0] == 1.0
    assert all(a > b for a, b in zip(f1, f1[1:], strict=False)), f1
    assert f1[-1] < 0.35 < 0.70 < f1[1], f1  # the knob reaches both calibrated teachers


@pytest.mark.parametrize("dataset", ["bc5cdr", "conll2003"])
@pytest.mark.parametrize("teacher", sorted(CALIBRATION_TARGETS))
def test_calibrated_noise_gives_the_target_f1_on_a_train_sample(bc5cdr_dir: Path, dataset: str,
                                                                teacher: str) -> None:
    examples = load_split(bc5cdr_dir.parent / dataset / "train.jsonl", limit=2000)
    target = CALIBRATION_TARGETS[teacher]
    noise = calibrated_noise("systematic", dataset, teacher)
    assert abs(systematic_f1(examples, noise, (1, 2, 3)) - target) <= 0.03
    # and the random teacher's calibrated noise reaches the same level
    labels = label_set(examples)
    gold = [ex.spans for ex in examples]
    rnd = calibrated_noise("random", dataset, teacher)
    f1 = sum(strict_f1(gold, run(NoiseModel(labels, rnd, s), examples)) for s in (1, 2, 3)) / 3
    assert abs(f1 - target) <= 0.03


def test_calibration_is_monotone_in_the_target() -> None:
    for kind in NOISE_KINDS:
        for dataset in ("bc5cdr", "conll2003"):
            assert calibrated_noise(kind, dataset, "chatgpt") < calibrated_noise(kind, dataset, "weak")
    with pytest.raises(ValueError, match="calibrated"):
        calibrated_noise("systematic", "ontonotes", "weak")


@settings(max_examples=300, deadline=None)
@given(sentences(), st.floats(0, 1), st.integers(0, 2**32), st.booleans())
def test_systematic_answers_are_legal_token_spans(sentence: tuple[str, list[tuple[int, int]], list[Span]],
                                                  noise: float, seed: int, demo_aware: bool) -> None:
    text, offsets, gold = sentence
    model = SystematicNoiseModel(["A", "B", "C"], noise, seed, demo_aware)
    protected = {text[s.start : s.end] for s in gold[:1]}
    out = model.corrupt(text, gold, protected)
    assert out == model.corrupt(text, gold, protected)
    starts, ends = {a for a, b in offsets if b > a}, {b for a, b in offsets if b > a}
    for s in out:
        assert s.start in starts and s.end in ends and s.label in {"A", "B", "C"}, (s, text)
        assert text[s.start : s.end] == text[s.start : s.end].strip() != ""
    assert all(a.end <= b.start for a, b in zip(out, out[1:], strict=False)), out
    if demo_aware and gold:
        assert gold[0] in out or text[gold[0].start : gold[0].end] not in protected
    if noise == 0:
        assert out == sorted(gold)


def test_make_noise_model_and_unknown_kind() -> None:
    assert isinstance(make_noise_model("systematic", ["A"], 0.5), SystematicNoiseModel)
    assert isinstance(make_noise_model("random", ["A"], 0.5), NoiseModel)
    with pytest.raises(ValueError, match="noise kind"):
        make_noise_model("adversarial", ["A"], 0.5)
    with pytest.raises(ValueError):
        SystematicRates.from_noise(1.5)
