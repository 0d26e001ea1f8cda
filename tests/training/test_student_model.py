"""StudentTagger: char spans <-> word-initial subword tags, decoding, inference, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.data import Example
from training.model import IGNORE_INDEX, StudentTagger, bio_labels, word_offsets
from training.spans import Span

TYPES = ["Chemical", "Disease"]


@pytest.fixture(scope="module")
def tagger(tiny_encoder: Path) -> StudentTagger:
    return StudentTagger.from_pretrained(TYPES, tiny_encoder, max_length=512)


def perfect_marginals(tagger: StudentTagger, example: Example) -> np.ndarray:
    """What a model that reproduces the encoded labels exactly would output (one-hot rows)."""
    (enc,) = tagger.encode_examples([example])
    rows = np.zeros((len(enc.words), len(tagger.labels)), dtype=np.float32)
    for w, pos in enumerate(enc.word_first):
        rows[w, enc.labels[pos] if pos >= 0 else 0] = 1.0
    return rows


def test_bio_labels_order_and_validation() -> None:
    assert bio_labels(["Disease", "Chemical", "Disease"]) == [
        "O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    with pytest.raises(ValueError):
        bio_labels(["B-Chemical"])


def test_word_offsets_split_on_any_whitespace() -> None:
    text = " ab\tc\u00a0dé\n中文 "
    assert [text[a:b] for a, b in word_offsets(text)] == ["ab", "c", "dé", "中文"]


WORD_CHARS = "abcxyzABCQ0129éüßñøÅçαβγдж中文日本한국😀-.,'()/%:;"
words_st = st.lists(st.text(alphabet=WORD_CHARS, min_size=1, max_size=8), min_size=1, max_size=12)
seps_st = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", " \u3000 "])


@st.composite
def examples_st(draw: st.DrawFn) -> Example:
    """Random texts (non-ASCII, punctuation, odd whitespace) with word-aligned entities that may be
    adjacent (same or different type) and may touch either end of the text."""
    words = draw(words_st)
    seps = [draw(seps_st) for _ in words]
    lead, trail = draw(st.sampled_from(["", " ", "\n"])), draw(st.sampled_from(["", " ", "\t"]))
    text, offsets = lead, []
    for i, w in enumerate(words):
        offsets.append((len(text), len(text) + len(w)))
        text += w + (seps[i] if i < len(words) - 1 else "")
    text += trail
    spans, i = [], 0
    while i < len(words):
        if draw(st.booleans()):
            n = draw(st.integers(1, min(3, len(words) - i)))
            spans.append(Span(offsets[i][0], offsets[i + n - 1][1], draw(st.sampled_from(TYPES))))
            i += n
        else:
            i += 1
    return Example("h", text, spans)


@settings(max_examples=80, deadline=None)
@given(example=examples_st())
def test_spans_to_subword_labels_round_trip(tagger: StudentTagger, example: Example) -> None:
    (enc,) = tagger.encode_examples([example])
    # Every word has a first subword, specials and continuation subwords are ignored.
    assert all(pos >= 0 for pos in enc.word_first)
    labelled = {pos for pos, lab in enumerate(enc.labels) if lab != IGNORE_INDEX}
    assert labelled == set(enc.word_first)
    decoded = tagger.decode(example.text, perfect_marginals(tagger, example))
    assert decoded == sorted(example.spans)
    assert all(s.score == pytest.approx(1.0) for s in decoded)


def test_decode_keeps_adjacent_same_type_entities_apart(tagger: StudentTagger) -> None:
    text = "aspirin ibuprofen heparin sodium ok"
    lab = {name: i for i, name in enumerate(tagger.labels)}
    marg = np.full((5, len(tagger.labels)), 0.05, dtype=np.float32)
    for w, (tag, p) in enumerate([("B-Chemical", 0.9), ("B-Chemical", 0.8), ("B-Chemical", 0.7),
                                  ("I-Chemical", 0.5), ("O", 0.9)]):
        marg[w, lab[tag]] = p
    spans = tagger.decode(text, marg)
    assert [s.text_in(text) for s in spans] == ["aspirin", "ibuprofen", "heparin sodium"]
    # score = mean over the span's words of the chosen tag's probability
    assert [s.score for s in spans] == pytest.approx([0.9, 0.8, 0.6])


def test_truncated_and_untokenisable_words_are_predicted_O(tiny_encoder: Path) -> None:
    short = StudentTagger.from_pretrained(TYPES, tiny_encoder, max_length=8)
    text = "fever " * 20 + "end"  # "fever" is one subword: 6 words fit beside [CLS] and [SEP]
    example = Example("t", text, [Span(0, 5, "Disease"), Span(6 * 19, 6 * 19 + 5, "Disease")])
    (enc,) = short.encode_examples([example])
    assert len(enc) == 8
    seen = [pos >= 0 for pos in enc.word_first]
    assert seen[:6] == [True] * 6 and not any(seen[6:])
    # Only the in-window entity is a training target.
    assert enc.labels.count(short.label2id["B-Disease"]) == 1
    marg = short.pool_outputs([text]).marginals[0]
    assert marg.shape == (21, len(short.labels))
    np.testing.assert_allclose(marg[6:], np.eye(len(short.labels))[[0] * 15])
    assert all(s.end <= 6 * 6 for s in short.predict([text])[0])
    # A word the tokenizer drops entirely (a lone zero-width space) has no subword: O, one-hot.
    (enc,) = short.encode_texts(["fever \u200b end"])
    assert [pos >= 0 for pos in enc.word_first] == [True, False, True]
    np.testing.assert_allclose(short.pool_outputs(["fever \u200b end"]).marginals[0][1],
                               np.eye(len(short.labels))[0])


def test_pool_outputs_shapes_order_and_padding_invariance(tagger: StudentTagger) -> None:
    texts = ["a much longer sentence about aspirin and severe fever in the patient", "fever", "",
             "the patient was given heparin"]
    out = tagger.pool_outputs(texts, batch_size=2)
    assert [m.shape for m in out.marginals] == [(len(t.split()), len(tagger.labels)) for t in texts]
    for m in out.marginals:
        np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-5)
    assert out.embeddings.shape == (4, tagger.model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, rtol=1e-5)
    # Bucketing and padding must not change anything: each text alone gives the same numbers.
    for i, t in enumerate(texts):
        alone = tagger.pool_outputs([t])
        np.testing.assert_allclose(alone.marginals[0], out.marginals[i], atol=1e-5)
        np.testing.assert_allclose(alone.embeddings[0], out.embeddings[i], atol=1e-5)
    spans, pool = tagger.predict_and_pool(texts)
    assert spans == tagger.predict(texts) and len(pool.marginals) == 4


def test_save_load_round_trip(tagger: StudentTagger, tmp_path: Path) -> None:
    tagger.save(tmp_path / "m")
    loaded = StudentTagger.load(tmp_path / "m")
    assert loaded.labels == tagger.labels and loaded.max_length == tagger.max_length
    texts = ["aspirin caused fever", "the patient"]
    np.testing.assert_allclose(np.concatenate(loaded.pool_outputs(texts).marginals),
                               np.concatenate(tagger.pool_outputs(texts).marginals), atol=1e-6)
