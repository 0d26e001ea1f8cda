"""The simulated teacher's noise model: seeded, documented corruption of a sentence's gold spans.

This is a SIMULATION of an LLM annotator, not a model of any real LLM. Its errors are random; a real
LLM's errors are systematic (the same kind of mention is missed or mistyped again and again, guidelines
are misread the same way every time). Results obtained with it say how a pipeline copes with noisy
labels of a given rate, not how it copes with a particular LLM.

Error kinds, all on token boundaries (a dataset text is its tokens joined by single spaces):
- missed entity: the gold entity is left out of the answer;
- wrong type: the entity is kept with another label of the dataset (uniform choice);
- boundary error: one token more or less on one side (left/right, expand/shrink, uniform among the
  moves that stay inside the text, keep at least one token and do not run into another entity);
- spurious span: a random 1-3 token span made of non-entity tokens, with a random label.

One knob, `noise` in [0, 1], scales them all (`NoiseRates.from_noise`):

    p_miss     = 0.45 * noise   (per gold entity)
    p_type     = 0.30 * noise   (per gold entity that is not missed)
    p_boundary = 0.45 * noise   (per gold entity that is not missed; independent of p_type)
    p_spurious = 0.35 * noise   (per slot; every sentence has 2 slots, so 0.7 * noise spans expected)

At noise 0 the answer is exactly the gold spans. Randomness is drawn from an RNG seeded by
hash(seed, text), so the same sentence always gets the same answer (a temperature-0 LLM is mostly
deterministic). The draws do not depend on `noise` (common random numbers): for one seed, an error made
at a lower noise is also made at a higher one (up to rare interactions between neighbouring boundary
moves), so quality falls monotonically with noise rather than jittering from level to level.
Measured strict F1 per noise level: docs/simulated-llm.md.

ASSUMPTION (`demo_aware=True`, off by default): a gold entity whose surface form appears among the
prompt's demonstration outputs is answered correctly (never missed, retyped or cut). This stands in
for in-context learning, so that k-NN demonstration retrieval has a measurable effect in simulation;
real LLMs benefit from demonstrations in less literal ways.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from training.spans import Span

# Per-kind rates at noise 1 (see the module docstring). Boundary and spurious errors dominate real
# LLM NER errors, so they are not smaller than misses.
MISS_AT_1 = 0.45
TYPE_AT_1 = 0.30
BOUNDARY_AT_1 = 0.45
SPURIOUS_AT_1 = 0.35
SPURIOUS_SLOTS = 2
MAX_SPURIOUS_TOKENS = 3


@dataclass(frozen=True)
class NoiseRates:
    """Per-kind error probabilities; `from_noise` is the documented mapping from the one knob."""

    miss: float = 0.0
    wrong_type: float = 0.0
    boundary: float = 0.0
    spurious: float = 0.0

    @classmethod
    def from_noise(cls, noise: float) -> NoiseRates:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        return cls(MISS_AT_1 * noise, TYPE_AT_1 * noise, BOUNDARY_AT_1 * noise, SPURIOUS_AT_1 * noise)


def token_offsets(text: str) -> list[tuple[int, int]]:
    """Char range of each single-space-separated token (empty tokens from double spaces included)."""
    offsets: list[tuple[int, int]] = []
    pos = 0
    for tok in text.split(" "):
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return offsets


def sentence_rng(seed: int, text: str) -> random.Random:
    """An RNG that depends only on (seed, text): stable across processes (unlike `hash()`)."""
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _wordy(token: str) -> bool:
    # Spurious spans start and end on a token with a letter or digit: even a bad LLM rarely tags "(".
    return any(ch.isalnum() for ch in token)


class NoiseModel:
    """Corrupts gold spans of a sentence at a given noise level, deterministically per (seed, text)."""

    def __init__(self, labels: Sequence[str], noise: float, seed: int = 0, demo_aware: bool = False) -> None:
        self.labels = sorted(set(labels))
        self.noise = float(noise)
        self.rates = NoiseRates.from_noise(self.noise)
        self.seed = int(seed)
        self.demo_aware = demo_aware

    def __repr__(self) -> str:
        return f"NoiseModel(noise={self.noise}, seed={self.seed}, demo_aware={self.demo_aware})"

    def corrupt(self, text: str, gold: Sequence[Span], demo_surface_forms: Iterable[str] = ()) -> list[Span]:
        """The simulated answer for `text`: gold spans with errors, sorted, non-overlapping, in the text."""
        rng = sentence_rng(self.seed, text)
        offsets = token_offsets(text)
        tok_by_start = {a: i for i, (a, b) in enumerate(offsets) if b > a}
        tok_by_end = {b: i for i, (a, b) in enumerate(offsets) if b > a}
        protected = set(demo_surface_forms) if self.demo_aware else set()
        gold_sorted = sorted(gold)
        # Tokens covered by a gold entity: boundary moves and spurious spans stay off them.
        in_entity = [False] * len(offsets)
        for s in gold_sorted:
            for i, (a, b) in enumerate(offsets):
                if a < s.end and b > s.start:
                    in_entity[i] = True

        out: list[Span] = []
        taken: list[tuple[int, int]] = []  # token ranges [first, last] already answered by expansions
        for span in gold_sorted:
            # Draw every number for every entity, whatever the noise: the same draws at every noise
            # level make errors nested (see "common random numbers" in the module docstring).
            u_miss, u_type, u_bnd, u_type_pick, u_move = (rng.random() for _ in range(5))
            if text[span.start : span.end] in protected:
                out.append(Span(span.start, span.end, span.label))
                continue
            if u_miss < self.rates.miss:
                continue
            label = span.label
            others = [lab for lab in self.labels if lab != span.label]
            if others and u_type < self.rates.wrong_type:
                label = others[int(u_type_pick * len(others))]
            start, end = span.start, span.end
            first, last = tok_by_start.get(span.start), tok_by_end.get(span.end)
            if first is not None and last is not None and u_bnd < self.rates.boundary:
                moves = self._boundary_moves(first, last, offsets, in_entity, taken)
                if moves:
                    first, last = moves[int(u_move * len(moves))]
                    start, end = offsets[first][0], offsets[last][1]
                    taken.append((first, last))
            out.append(Span(start, end, label))

        out.extend(self._spurious(rng, text, offsets, in_entity, out))
        return sorted(out)

    @staticmethod
    def _boundary_moves(first: int, last: int, offsets: Sequence[tuple[int, int]], in_entity: Sequence[bool],
                        taken: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Token ranges one token longer or shorter on one side, that are legal in this sentence."""
        def free(i: int) -> bool:
            return (0 <= i < len(offsets) and offsets[i][1] > offsets[i][0] and not in_entity[i]
                    and not any(a <= i <= b for a, b in taken))

        moves: list[tuple[int, int]] = []
        if free(first - 1):
            moves.append((first - 1, last))  # one token more on the left
        if last > first:
            moves.append((first + 1, last))  # one token less on the left
            moves.append((first, last - 1))  # one token less on the right
        if free(last + 1):
            moves.append((first, last + 1))  # one token more on the right
        # A shrink must not leave an empty token at an edge (double spaces give empty tokens).
        return [(a, b) for a, b in moves if offsets[a][1] > offsets[a][0] and offsets[b][1] > offsets[b][0]]

    def _spurious(self, rng: random.Random, text: str, offsets: Sequence[tuple[int, int]],
                  in_entity: Sequence[bool], answered: Sequence[Span]) -> list[Span]:
        toks = [text[a:b] for a, b in offsets]
        starts = [i for i, t in enumerate(toks) if not in_entity[i] and _wordy(t)]
        found: list[Span] = []
        for _ in range(SPURIOUS_SLOTS):
            u_slot, u_start, u_len, u_label = (rng.random() for _ in range(4))
            if u_slot >= self.rates.spurious or not starts or not self.labels:
                continue
            first = starts[int(u_start * len(starts))]
            last = first
            for i in range(first + 1, min(first + 1 + int(u_len * MAX_SPURIOUS_TOKENS), len(toks))):
                if in_entity[i] or not toks[i]:
                    break
                last = i
            while last > first and not _wordy(toks[last]):
                last -= 1
            span = Span(offsets[first][0], offsets[last][1], self.labels[int(u_label * len(self.labels))])
            if all(span.end <= s.start or span.start >= s.end for s in [*answered, *found]):
                found.append(span)
        return found
