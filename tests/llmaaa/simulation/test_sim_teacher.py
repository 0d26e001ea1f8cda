"""The simulated teacher and the reading of ner.v1 prompts rendered from the real template."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest

from llmaaa.simulation.teacher import PromptFormatError, SimulatedTeacher, demo_surface_forms, parse_prompt
from training.data import Example, load_split
from training.spans import Span

TEMPLATE = Path(__file__).resolve().parents[3] / "backend" / "annotator" / "prompts" / "ner.v1.jinja"


def render_prompt(query: str, demos: list[Example]) -> list[dict[str, Any]]:
    """Chat messages from ner.v1.jinja, split at its `### system` / `### user` lines (done by hand here)."""
    source = TEMPLATE.read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    parts = re.split(r"^### (system|user)[ \t]*\n", source, flags=re.MULTILINE)
    labels = [{"value": "Chemical", "description": "a drug"}, {"value": "Disease", "description": "an illness"}]
    rendered_demos = [{"text": d.text, "output": json.dumps(
        {"entities": [{"span": d.text[s.start : s.end], "type": s.label} for s in d.spans]},
        ensure_ascii=False, separators=(",", ":"))} for d in demos]
    context = {"domain": "biomedicine", "labels": labels, "demos": rendered_demos, "query": query}
    return [{"role": role, "content": env.from_string(body).render(**context)}
            for role, body in zip(parts[1::2], parts[2::2], strict=True)]


@pytest.fixture(scope="module")
def dev(bc5cdr_dir: Path) -> list[Example]:
    return load_split(bc5cdr_dir / "dev.jsonl", limit=300)


def test_parse_prompt_finds_query_and_demos_in_the_real_template(dev: list[Example]) -> None:
    demos = [ex for ex in dev[:40] if ex.spans][:3]
    query = dev[50].text
    messages = render_prompt(query, demos)
    assert [m["role"] for m in messages] == ["system", "user"]
    got_query, got_demos = parse_prompt(messages)
    assert got_query == query
    assert [t for t, _ in got_demos] == [d.text for d in demos]
    for (_, output), demo in zip(got_demos, demos, strict=True):
        assert [e["span"] for e in json.loads(output)["entities"]] == [demo.text[s.start : s.end] for s in demo.spans]
    assert demo_surface_forms(got_demos) == [d.text[s.start : s.end] for d in demos for s in d.spans]


def test_parse_prompt_without_demos_and_with_awkward_text() -> None:
    query = 'He said "Output: none" then Input: nothing ( 5 mg / kg ) .'
    got, demos = parse_prompt(render_prompt(query, []))
    # The LAST "Input: " wins, as the contract says: a query holding "Input: " is cut there.
    assert got == "nothing ( 5 mg / kg ) ."
    assert demos == []
    got, _ = parse_prompt(render_prompt("Naloxone reverses the antihypertensive effect of clonidine .", []))
    assert got == "Naloxone reverses the antihypertensive effect of clonidine ."


def test_parse_prompt_uses_the_last_user_message_and_content_parts() -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Input: old\nOutput:"},
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": [{"type": "text", "text": "Input: a b\nOutput: {\"entities\":[]}\n\n"},
                                     {"type": "text", "text": "Input: new text\nOutput:"}]},
    ]
    assert parse_prompt(messages) == ("new text", [("a b", '{"entities":[]}')])
    with pytest.raises(PromptFormatError):
        parse_prompt([{"role": "user", "content": "Tag this: aspirin"}])
    with pytest.raises(PromptFormatError):
        parse_prompt([{"role": "system", "content": "Input: x\nOutput:"}])


def test_demo_surface_forms_skips_broken_outputs() -> None:
    demos = [("t", '{"entities":[{"span":"aspirin","type":"Chemical"},{"type":"Disease"}]}'),
             ("u", "not json"), ("v", '["x"]'), ("w", '{"entities":[{"span":"pain","type":"Disease"}]}')]
    assert demo_surface_forms(demos) == ["aspirin", "pain"]


def test_teacher_answers_known_texts_and_none_for_unknown(dev: list[Example]) -> None:
    teacher = SimulatedTeacher(dev, noise=0.0, seed=1)
    assert teacher.labels == ["Chemical", "Disease"]
    for ex in dev[:100]:
        answer = teacher.answer(ex.text)
        assert answer == [{"span": ex.text[s.start : s.end], "type": s.label} for s in sorted(ex.spans)]
    assert teacher.answer("a sentence that is in no split") is None
    assert teacher.answer_spans("a sentence that is in no split") is None
    # Whitespace differences (a client stripping or re-spacing the text) still find the sentence.
    ex = next(e for e in dev if e.spans)
    assert teacher.answer("  " + ex.text.replace(" ", "  ") + "\n") == teacher.answer(ex.text)


def test_noisy_answers_are_substrings_and_deterministic(dev: list[Example]) -> None:
    a = SimulatedTeacher(dev, noise=0.7, seed=5)
    b = SimulatedTeacher(list(reversed(dev)), noise=0.7, seed=5)
    differs = 0
    for ex in dev:
        answer = a.answer(ex.text)
        assert answer is not None and answer == b.answer(ex.text) == a.answer(ex.text)
        assert all(item["span"] in ex.text and item["type"] in a.labels for item in answer)
        differs += answer != [{"span": ex.text[s.start : s.end], "type": s.label} for s in sorted(ex.spans)]
    assert differs > len(dev) // 3


def test_demo_aware_teacher_gets_demo_entities_right(dev: list[Example]) -> None:
    aware = SimulatedTeacher(dev, noise=1.0, seed=2, demo_aware=True)
    blind = SimulatedTeacher(dev, noise=1.0, seed=2)
    kept_aware = kept_blind = total = 0
    for ex in [e for e in dev if e.spans]:
        forms = [ex.text[s.start : s.end] for s in ex.spans]
        gold = [{"span": f, "type": s.label} for f, s in zip(forms, ex.spans, strict=True)]
        total += len(gold)
        kept_aware += sum(g in (aware.answer(ex.text, forms) or []) for g in gold)
        kept_blind += sum(g in (blind.answer(ex.text, forms) or []) for g in gold)
    assert kept_aware == total
    assert kept_blind < 0.6 * total


def test_first_example_wins_for_a_repeated_text() -> None:
    text = "Aspirin helps ."
    first = Example("a", text, [Span(0, 7, "Chemical")])
    second = Example("b", text, [Span(0, 7, "Disease")])
    teacher = SimulatedTeacher([first, second], noise=0.0, labels=["Chemical", "Disease"])
    assert teacher.answer(text) == [{"span": "Aspirin", "type": "Chemical"}]
    assert len(teacher) == 1


def inconsistent_form_share(teacher: SimulatedTeacher, dev: list[Example]) -> float:
    """Share of repeated gold forms answered differently across occurrences (missed once, typed another time...)."""
    seen: dict[str, set[str | None]] = {}
    counts: dict[str, int] = {}
    for ex in dev:
        replies = teacher.answer(ex.text) or []
        for s in ex.spans:
            form = ex.text[s.start : s.end]
            whole = sorted({r["type"] for r in replies if r["span"] == form})
            seen.setdefault(form.lower(), set()).add(",".join(whole) or None)
            counts[form.lower()] = counts.get(form.lower(), 0) + 1
    repeated = [f for f, n in counts.items() if n > 1]
    assert len(repeated) > 50
    return sum(len(seen[f]) > 1 for f in repeated) / len(repeated)


def test_systematic_teacher_repeats_its_answer_for_a_surface_form(dev: list[Example]) -> None:
    systematic = SimulatedTeacher(dev, noise=0.6, seed=3, kind="systematic")
    assert systematic.kind == "systematic" and SimulatedTeacher(dev, noise=0.6).kind == "random"
    # A form is answered whole with one type every time, or never (missed or cut); a few forms have two
    # gold types, or an extension blocked in one sentence, so not exactly 0.
    assert inconsistent_form_share(systematic, dev) < 0.05
    assert inconsistent_form_share(SimulatedTeacher(dev, noise=0.6, seed=3), dev) > 0.3
    with pytest.raises(ValueError, match="noise kind"):
        SimulatedTeacher(dev, noise=0.6, kind="chaotic")
