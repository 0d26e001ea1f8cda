"""Synthetic NER sentences for the training tests (drug and disease mentions among filler words)."""

from __future__ import annotations

import random

from training.data import Example
from training.spans import bio_to_spans

CHEMICALS = ["aspirin", "ibuprofen", "morphine", "heparin", "cisplatin", "lithium"]
DISEASES = ["cancer", "asthma", "fever", "anemia", "migraine", "hepatitis"]
FILLER = ["the", "patient", "was", "given", "with", "and", "after", "severe", "a", "of", "treated", "for"]


def synthetic_example(rng: random.Random, ex_id: str, flip: bool = False) -> Example:
    """Filler words with one or two drug/disease mentions; `flip` swaps the two types' labels."""
    tokens: list[str] = []
    tags: list[str] = []
    for _ in range(rng.randint(1, 2)):
        tokens += rng.sample(FILLER, rng.randint(1, 3))
        tags += ["O"] * (len(tokens) - len(tags))
        is_chem = rng.random() < 0.5
        tokens.append(rng.choice(CHEMICALS if is_chem else DISEASES))
        tags.append("B-" + ("Chemical" if is_chem != flip else "Disease"))
    tokens += rng.sample(FILLER, rng.randint(0, 2))
    tags += ["O"] * (len(tokens) - len(tags))
    text, spans = bio_to_spans(tokens, tags)
    return Example(ex_id, text, spans, tokens)


def synthetic_set(n: int, seed: int, prefix: str, flip_every: int = 0) -> list[Example]:
    """`n` synthetic sentences; every `flip_every`-th one (if > 0) has flipped labels (id suffix `-flip`)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        flip = flip_every > 0 and i % flip_every == 0
        out.append(synthetic_example(rng, f"{prefix}-{i}" + ("-flip" if flip else ""), flip))
    return out


def unseen_word_set(n: int, seed: int, prefix: str) -> list[Example]:
    """`n` two-word sentences, a filler word then a made-up word of the sentence's own as its one entity,
    of a random type: no two sentences share a text, no entity word occurs in `synthetic_set`, and the type
    can be learnt only by heart (a model that has not seen the sentence can at best guess it)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        word = "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3)) + str(i)
        tokens = [rng.choice(FILLER), word]
        tags = ["O", "B-" + rng.choice(["Chemical", "Disease"])]
        text, spans = bio_to_spans(tokens, tags)
        out.append(Example(f"{prefix}-{i}", text, spans, tokens))
    return out
