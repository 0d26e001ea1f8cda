"""LLM reply → (span, type) pairs → checked character-offset `Span`s.

`parse_reply` is tolerant about the wrapping (code fences, prose, object or list) but never guesses
about content: when the reply does not hold exactly one answer it raises `MalformedReplyError`, so that a
broken or self-contradicting reply is recorded as "not annotated", never as "no entities". The rule:

1. A reply that is one JSON value which reads as an answer is that answer.
2. Otherwise the reply is scanned for *answer candidates*: JSON values (in ```fences``` or in prose) that
   read as an answer. The inside of a candidate is not searched again; the inside of a JSON value that
   is no answer is (`{"result": {"entities": [...]}}`), but a bare `[]` nested there is no candidate.
3. A bare `[]` in prose is weak evidence: it counts only when it is the only JSON list or object in the
   reply. `Chemicals: ["aspirin"] Diseases: []` and `[] ... {"entities": [...]}` are malformed, whereas
   `{"entities": []}` is an explicit answer wherever it stands.
4. Every candidate must give the same set of (span, type) pairs: `{"entities": []}` followed by a
   corrected list, or two different lists, are malformed ("ambiguous"). Repeats of one answer are fine.
5. A bracket that never closes (a reply cut off by `max_tokens`) is malformed, even if complete items
   could be salvaged before it: they would look like a full answer that misses entities. The only
   exception is an unclosed bracket in prose *before* a complete ```fence```: a cut-off is always at the
   end of a reply, so that bracket is prose (`see [below:`).
No candidate at all is malformed too. (`finish_reason` "length" / "content_filter" is checked by the
annotator before parsing: such a reply is a failure even when it happens to parse.)

`ground` matching rules (the LLM copies spans; we locate them):
- exact, case-sensitive occurrences first, at EVERY place the mention occurs (as the paper does);
- word-boundary aware: "DA" does not match inside "DAT". Boundaries are only required where the
  mention's first/last character is a letter or digit of a script written with spaces (CJK, Thai and
  similar scripts have no word spaces, so there a substring match is all one can ask for);
- only if there is no exact occurrence: a fallback that tolerates different whitespace runs and
  letter case, except for mentions written all in capitals (acronyms like "US" or "PD", where
  case carries meaning). A fallback match takes the text's own characters as the span;
- unknown types and mentions not in the text are dropped (with a reason), overlaps are resolved
  longest-wins, and an identical range claimed with two types keeps the first type in the reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.labeling_config import LabelSchema
from training.spans import Span, resolve_overlaps


class MalformedReplyError(ValueError):
    """The reply holds no single complete JSON answer in a form we understand."""


# Keys an LLM may use instead of ours. "entity" only names a span (its mention), never a type.
LIST_KEYS = ("entities", "named_entities", "entity_list", "spans", "mentions", "annotations", "results",
             "items", "output")
SPAN_KEYS = ("span", "text", "mention", "entity", "name", "value", "word")
TYPE_KEYS = ("type", "label", "entity_type", "entity_label", "category", "tag", "class")

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_SCAN = 400  # candidate '{' / '[' positions tried in a prose reply: bounds the work on junk input
_MAX_CHARS = 200_000

_NOT_JSON = object()  # sentinel: "did not decode" (None is a valid JSON value, `null`)
Pairs = list[tuple[str, str]]


def _decode_all(text: str) -> Any:
    """`json.loads`, or the `_NOT_JSON` sentinel on failure (deep nesting raises RecursionError too)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _item_pair(item: Any) -> tuple[str, str] | None:
    if isinstance(item, dict):
        span = next((item[k] for k in SPAN_KEYS if isinstance(item.get(k), str)), None)
        typ = next((item[k] for k in TYPE_KEYS if isinstance(item.get(k), str)), None)
        if span is not None and typ is not None:
            return span, typ
        return None
    if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0], item[1]  # ["aspirin", "Chemical"]
    return None


def _interpret(value: Any) -> Pairs | None:
    """Pairs from a decoded JSON value, or None when it is not an answer in a form we accept."""
    if isinstance(value, dict):
        for key in LIST_KEYS:
            if key in value:
                return _interpret(value[key]) if isinstance(value[key], list) else None
        single = _item_pair(value)
        if single is not None:
            return [single]
        # {"Chemical": ["aspirin"], "Disease": []}: type-keyed lists. Accepted only when it names at
        # least one mention, since `{"foo": []}` could be anything and must not read as "no entities".
        if value and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()):
            pairs = [(x, str(k)) for k, v in value.items() for x in v]
            return pairs or None
        return None
    if isinstance(value, list):
        pairs = [p for p in map(_item_pair, value) if p is not None]
        # Items we cannot read are skipped, but a non-empty list with none readable is no answer.
        return pairs if pairs or not value else None
    return None


def _closing_index(s: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at `start` (string-aware), None if unclosed."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(s)):
        ch = s[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


@dataclass
class _Scan:
    """What a scan of one piece of the reply found."""

    answers: list[Pairs] = field(default_factory=list)
    bare_empty: int = 0  # bare `[]` found outside any other JSON value
    top_values: int = 0  # JSON lists/objects found outside any other JSON value
    cut_off: bool = False  # a bracket that never closes
    exhausted: bool = False  # gave up after _MAX_SCAN positions


def _scan(s: str, found: _Scan, final: bool) -> None:
    """Add the answer candidates of `s` to `found` (see the module docstring for the rule).

    `final`: `s` ends the reply, so an unclosed bracket in it is a cut-off, not stray prose.
    """
    decoder = json.JSONDecoder()
    pos, tries = 0, 0
    outer_end = 0  # end of the last complete JSON value that was no answer (we are inside it before that)
    while True:
        starts = [i for i in (s.find("{", pos), s.find("[", pos)) if i >= 0]
        if not starts:
            return
        if tries >= _MAX_SCAN:
            found.exhausted = True
            return
        i = min(starts)
        tries += 1
        try:
            value, end = decoder.raw_decode(s, i)
        except (ValueError, RecursionError):
            if _closing_index(s, i) is None and final:
                # Unclosed from here on: everything after is inside a truncated value, and a
                # salvaged inner item would pass for a complete answer.
                found.cut_off = True
                return
            pos = i + 1
            continue
        top = i >= outer_end
        found.top_values += int(top)
        pairs = _interpret(value)
        if pairs is not None and not pairs and isinstance(value, list):
            # A bare `[]`: evidence only at top level, and only if it is alone (checked by the caller).
            found.bare_empty += int(top)
            pos = end
            continue
        if pairs is not None:
            found.answers.append(pairs)
            pos = end  # its inside is part of this answer, not another one
            continue
        outer_end = max(outer_end, end)
        pos = i + 1  # a complete value that is not an answer: look inside it ({"result": {...}})


def parse_reply(content: str) -> Pairs:
    """(span, type) pairs from an LLM reply; `[]` only for a well-formed, unambiguous empty answer.

    Accepts `{"entities": [...]}` (and a few synonyms of `entities`), a bare list, a single
    `{"span", "type"}` object, item keys like `text`/`label`/`entity`, `[span, type]` pairs,
    type-keyed lists, inside code fences or prose. Raises `MalformedReplyError` when there is no
    answer, a cut-off one, or several that disagree (the rule is in the module docstring).
    """
    if not isinstance(content, str):
        raise MalformedReplyError(f"reply is {type(content).__name__}, not text")
    s = content.strip()[:_MAX_CHARS]
    if not s:
        raise MalformedReplyError("empty reply")
    whole = _decode_all(s)
    if whole is not _NOT_JSON:
        pairs = _interpret(whole)
        if pairs is not None:
            return pairs
    found = _Scan()
    # Fenced blocks and the prose between them are scanned apart: a stray bracket in prose cannot
    # swallow a fenced answer. Only the piece that ends the reply can be cut off.
    last = 0
    for m in _FENCE.finditer(s):
        _scan(s[last : m.start()], found, final=False)
        _scan(m.group(1), found, final=True)  # a fence is closed, so its content must be complete
        last = m.end()
    _scan(s[last:], found, final=True)
    head = repr(s[:120])
    if found.cut_off:
        raise MalformedReplyError(f"the JSON answer is cut off: {head}")
    if found.exhausted:
        raise MalformedReplyError(f"too many brackets to find one answer: {head}")
    answers = list(found.answers)
    if found.bare_empty:
        if found.top_values > found.bare_empty or answers:
            raise MalformedReplyError(f"a bare [] beside other JSON values is ambiguous: {head}")
        answers.append([])
    if not answers:
        raise MalformedReplyError(f"no complete JSON answer in the reply: {head}")
    if len({frozenset(a) for a in answers}) > 1:
        raise MalformedReplyError(f"{len(answers)} different answers in one reply: {head}")
    return answers[0]


# ---------------------------------------------------------------------- grounding

_UNSPACED = (
    (0x0E00, 0x0FFF),  # Thai, Lao, Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x9FFF),  # CJK radicals, punctuation, kana, bopomofo, ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x20000, 0x3FFFF),  # CJK extensions
)


def _wordish(ch: str) -> bool:
    """A character that glues onto its neighbours to make a word (so a boundary is required)."""
    if not (ch.isalnum() or ch == "_"):
        return False
    cp = ord(ch)
    return not any(lo <= cp <= hi for lo, hi in _UNSPACED)


def _at_boundaries(text: str, start: int, end: int) -> bool:
    if _wordish(text[start]) and start > 0 and _wordish(text[start - 1]):
        return False
    if _wordish(text[end - 1]) and end < len(text) and _wordish(text[end]):
        return False
    return True


def _is_acronym(mention: str) -> bool:
    letters = [c for c in mention if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters if c.lower() != c.upper())


def _occurrences(text: str, mention: str) -> list[tuple[int, int, str]]:
    """(start, end, matched string) of every occurrence; the matched string is what was compared."""
    if not mention:
        return []
    hits: list[tuple[int, int, str]] = []
    i = text.find(mention)
    while i >= 0:
        if _at_boundaries(text, i, i + len(mention)):
            hits.append((i, i + len(mention), mention))
        i = text.find(mention, i + 1)
    if hits:
        return hits
    tokens = mention.split()
    if not tokens:
        return []
    pattern = r"\s+".join(re.escape(t) for t in tokens)
    flags = 0 if _is_acronym(mention) else re.IGNORECASE
    for m in re.finditer(pattern, text, flags):
        if m.end() > m.start() and _at_boundaries(text, m.start(), m.end()):
            hits.append((m.start(), m.end(), m.group()))
    return hits


def find_occurrences(text: str, mention: str) -> list[tuple[int, int]]:
    """Every place `mention` occurs in `text` as a whole word sequence (see the module docstring)."""
    return [(s, e) for s, e, _ in _occurrences(text, mention)]


@dataclass
class GroundingResult:
    """Spans found in the text, and the LLM's mentions that were not kept, each with a reason."""

    spans: list[Span] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)


def ground(text: str, pairs: Iterable[Sequence[Any]], schema: LabelSchema) -> GroundingResult:
    """Map (span, type) pairs onto `text`: every occurrence, known labels only, no overlaps."""
    result = GroundingResult()
    claimed: dict[tuple[int, int], str] = {}  # range -> label (first mention in the reply wins)
    matched: dict[tuple[int, int], str] = {}  # range -> the string that matched there
    owned: list[tuple[int, str, str, set[tuple[int, int]]]] = []  # (pair, mention, type, its ranges)
    for idx, pair in enumerate(pairs):
        mention, typ = (pair[0], pair[1]) if len(pair) >= 2 else (pair[0] if pair else "", "")
        if not isinstance(mention, str) or not isinstance(typ, str):
            result.dropped.append((str(mention), str(typ), "not text"))
            continue
        label = schema.map_type(typ)
        if label is None:
            result.dropped.append((mention, typ, "unknown type"))
            continue
        stripped = mention.strip()
        if not stripped:
            result.dropped.append((mention, typ, "empty span"))
            continue
        hits = _occurrences(text, stripped)
        if not hits:
            result.dropped.append((mention, typ, "not in text"))
            continue
        mine = set()
        for start, end, found in hits:
            rng = (start, end)
            if claimed.setdefault(rng, label) == label:
                mine.add(rng)
                matched.setdefault(rng, found)
        if not mine:
            result.dropped.append((mention, typ, "same text already given another type"))
            continue
        owned.append((idx, mention, typ, mine))
    kept = resolve_overlaps(Span(s, e, label) for (s, e), label in claimed.items())
    kept_ranges = {(s.start, s.end) for s in kept}
    for _idx, mention, typ, mine in owned:
        if not mine & kept_ranges:
            result.dropped.append((mention, typ, "overlaps a longer span"))
    # The contract Label Studio relies on: offsets inside the text, a label of the config.
    for span in kept:
        if not (0 <= span.start < span.end <= len(text)) or span.label not in schema.values:
            raise AssertionError(f"grounding made an invalid span {span} for a text of length {len(text)}")
        found = matched[(span.start, span.end)]
        if not found or text[span.start : span.end] != found:
            raise AssertionError(f"span {span} does not hold the matched text {found!r}")
    result.spans = kept
    return result
