"""Property tests: no reply and no text can crash parsing/grounding or produce an invalid span."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.annotator.parsing import MalformedReplyError, ground, parse_reply
from backend.annotator.prompt import entities_json
from backend.labeling_config import LabelSchema, LabelSpec
from training.spans import Span

SCHEMA = LabelSchema("label", "text", "text", [LabelSpec("Chemical", "a drug"), LabelSpec("Disease", "an illness")])
TYPES = st.sampled_from(["Chemical", "Disease", "chemical", "a drug", "an illness (Disease)", "PER", "", "Chem"])
ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=120)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_spans(text: str, spans: list[Span]) -> None:
    for s in spans:
        assert 0 <= s.start < s.end <= len(text)
        assert s.label in SCHEMA.values
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end <= b.start  # sorted and flat


# Replies that look like JSON answers, wrapped in random prose/fences, sometimes cut short.
ITEM = st.fixed_dictionaries({"span": ANY_TEXT, "type": TYPES})
JSONISH = st.one_of(
    st.lists(ITEM, max_size=5).map(json.dumps),
    st.lists(ITEM, max_size=5).map(lambda xs: json.dumps({"entities": xs})),
    st.recursive(st.none() | st.booleans() | st.integers() | ANY_TEXT,
                 lambda kids: st.lists(kids, max_size=3) | st.dictionaries(ANY_TEXT, kids, max_size=3),
                 max_leaves=8).map(json.dumps),
)


@st.composite
def replies(draw: st.DrawFn) -> str:
    core = draw(JSONISH)
    if draw(st.booleans()):
        core = core[: draw(st.integers(0, len(core)))]
    wrap = draw(st.sampled_from(["{}", "```json\n{}\n```", "Here: {} ok", "{}{}", "[{}"]))
    return wrap.replace("{}", core, 1).replace("{}", draw(ANY_TEXT))


@FAST
@given(reply=st.one_of(ANY_TEXT, replies()), text=ANY_TEXT)
def test_any_reply_and_text_never_crash_and_spans_are_valid(reply: str, text: str) -> None:
    try:
        pairs = parse_reply(reply)
    except MalformedReplyError:
        return
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in pairs)
    _check_spans(text, ground(text, pairs, SCHEMA).spans)


@FAST
@given(text=ANY_TEXT, data=st.data())
def test_mentions_cut_from_the_text_always_ground_validly(text: str, data: st.DataObject) -> None:
    pairs = []
    for _ in range(data.draw(st.integers(0, 6))):
        a = data.draw(st.integers(0, len(text)))
        b = data.draw(st.integers(a, len(text)))
        pairs.append((text[a:b], data.draw(TYPES)))
    result = ground(text, pairs, SCHEMA)
    _check_spans(text, result.spans)
    # Every mention is accounted for: it either gave a span or was dropped with a reason.
    kept = {text[s.start : s.end].casefold() for s in result.spans}
    dropped = {(m, t) for m, t, _ in result.dropped}
    for mention, typ in pairs:
        assert (mention, typ) in dropped or " ".join(mention.split()).casefold() in {
            " ".join(k.split()) for k in kept} or mention.strip() == ""


WORDS = st.lists(st.from_regex(r"[A-Za-zµβ0-9]{1,8}", fullmatch=True), min_size=1, max_size=12, unique=True)


@FAST
@given(words=WORDS, data=st.data())
def test_a_perfect_reply_round_trips_to_the_same_spans(words: list[str], data: st.DataObject) -> None:
    """Gold spans → the demo JSON we show the LLM → parse → ground gives the gold spans back."""
    text = " ".join(words)
    starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
    gold, i = [], 0
    while i < len(words):
        n = data.draw(st.integers(0, 3))
        if n and i + n <= len(words):
            gold.append(Span(starts[i], starts[i + n - 1] + len(words[i + n - 1]),
                             data.draw(st.sampled_from(SCHEMA.values))))
        i += max(n, 1) + 1  # a gap, so entities do not touch
    # Unique words make every mention occur once, so "every occurrence" is exactly the gold span.
    result = ground(text, parse_reply(entities_json(text, gold)), SCHEMA)
    assert result.spans == sorted(gold)
