"""MC dropout on the student's head: shapes, agreement with the deterministic pass, reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.mc_dropout import head_dropout_rate, mc_head_marginals
from training.model import StudentTagger

TEXTS = ["Aspirin caused hepatitis in two patients .", "", "No effect", "word " * 300]


@pytest.fixture(scope="module")
def tagger(tiny_encoder: Path) -> StudentTagger:
    return StudentTagger.from_pretrained(["Chemical", "Disease"], tiny_encoder, max_length=64)


def test_without_dropout_every_pass_is_the_deterministic_marginals(tagger: StudentTagger) -> None:
    mc = mc_head_marginals(tagger, TEXTS, passes=3, dropout=0.0, batch_size=2)
    det = tagger.word_marginals(TEXTS)
    assert [m.shape for m in mc] == [(3, d.shape[0], 5) for d in det]
    for m, d in zip(mc, det, strict=True):
        assert np.allclose(m, d[None], atol=1e-5)
    # The 300-word text is cut at 64 subwords: the words beyond are "O" with probability 1 in every pass.
    assert np.all(mc[3][:, -1] == np.eye(5)[0])


def test_head_dropout_makes_passes_differ_reproducibly(tagger: StudentTagger) -> None:
    a = mc_head_marginals(tagger, TEXTS[:3], passes=4, dropout=0.5, seed=1)
    b = mc_head_marginals(tagger, TEXTS[:3], passes=4, dropout=0.5, seed=1)
    c = mc_head_marginals(tagger, TEXTS[:3], passes=4, dropout=0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.allclose(a[0], c[0])
    assert not np.allclose(a[0][0], a[0][1])  # two passes of one sentence disagree
    assert np.allclose(a[0].sum(axis=-1), 1.0, atol=1e-5)
    assert a[1].shape == (4, 0, 5)


def test_dropout_rate_and_arguments(tagger: StudentTagger) -> None:
    assert head_dropout_rate(tagger.model) == pytest.approx(0.1)  # BERT's hidden_dropout_prob
    with pytest.raises(ValueError, match="at least 2"):
        mc_head_marginals(tagger, TEXTS, passes=1)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        mc_head_marginals(tagger, TEXTS, dropout=1.0)
