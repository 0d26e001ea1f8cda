"""parse_reply: tolerant about wrapping, strict about completeness."""

from __future__ import annotations

import pytest

from backend.annotator.parsing import MalformedReplyError, parse_reply

PAIRS = [("aspirin", "Chemical"), ("headache", "Disease")]
OBJ = '{"entities": [{"span": "aspirin", "type": "Chemical"}, {"span": "headache", "type": "Disease"}]}'
LIST = '[{"span": "aspirin", "type": "Chemical"}, {"span": "headache", "type": "Disease"}]'


@pytest.mark.parametrize("reply", [
    OBJ,
    LIST,
    f"  \n{OBJ}\n\n",
    f"```json\n{OBJ}\n```",
    f"```\n{LIST}\n```",
    f"Here are the entities I found:\n```json\n{OBJ}\n```\nLet me know if you need more.",
    f"Sure! {LIST} These are all of them.",
    f"Output: {OBJ}",
    '{"result": ' + OBJ + "}",  # the answer nested one level down
    '{"entities": [{"text": "aspirin", "label": "Chemical"}, {"entity": "headache", "entity_type": "Disease"}]}',
    '[["aspirin", "Chemical"], ["headache", "Disease"]]',
    '{"Chemical": ["aspirin"], "Disease": ["headache"]}',
])
def test_wrappings_and_shapes(reply: str) -> None:
    assert parse_reply(reply) == PAIRS


def test_single_object_is_one_entity() -> None:
    assert parse_reply('{"span": "aspirin", "type": "Chemical"}') == [("aspirin", "Chemical")]


@pytest.mark.parametrize("reply", ['{"entities": []}', "[]", "```json\n{\"entities\":[]}\n```",
                                   'No entity here: {"entities": []}'])
def test_well_formed_empty_answers(reply: str) -> None:
    assert parse_reply(reply) == []


def test_unusable_items_are_skipped_when_others_are_readable() -> None:
    reply = '{"entities": [{"span": "aspirin", "type": "Chemical"}, {"span": 3}, "x", {"type": "Disease"}]}'
    assert parse_reply(reply) == [("aspirin", "Chemical")]


def test_non_ascii_is_kept_exactly() -> None:
    assert parse_reply('{"entities":[{"span":"5 µg","type":"Dose"},{"span":"\\u03b2-blocker","type":"C"}]}') == [
        ("5 µg", "Dose"), ("β-blocker", "C")]


@pytest.mark.parametrize("reply", [
    "",
    "   ",
    "No entities found.",
    "I cannot help with that.",
    # Truncated (max_tokens): the complete first item must NOT pass for a whole answer.
    '{"entities": [{"span": "aspirin", "type": "Chemical"}, {"span": "head',
    '```json\n[{"span": "aspirin", "type": "Chemical"},\n',
    '{"entities": null}',
    "{}",
    '{"foo": []}',
    "[1, 2, 3]",
    '{"entities": [1, 2]}',
    '{"entities": "aspirin"}',
    "[[[[[[[[[[" * 500,  # deep nesting is not a crash
    "__import__('os').system('echo pwned')",  # never evaluated
    "[{'span': 'aspirin', 'type': 'Chemical'}]",  # Python literal, not JSON: never eval'ed either
])
def test_malformed_replies_raise(reply: str) -> None:
    with pytest.raises(MalformedReplyError):
        parse_reply(reply)


def test_non_text_reply_raises() -> None:
    with pytest.raises(MalformedReplyError):
        parse_reply(None)  # type: ignore[arg-type]


def test_prose_bracket_before_the_answer_is_skipped() -> None:
    assert parse_reply(f"I found [2] entities (see below):\n{LIST}") == PAIRS
