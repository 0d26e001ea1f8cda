"""DemoIndex: cosine k-NN over verified examples, most similar last, incremental and thread-safe."""

from __future__ import annotations

import threading

from annot_fakes import FakeEmbedder

from backend.annotator.demos import DemoIndex
from training.spans import Span

EXAMPLES = {
    "1": "the cat sat on the mat",
    "2": "aspirin caused severe headache",
    "3": "aspirin caused headache and nausea",
    "4": "stock markets fell sharply today",
}


def make_index(embedder: FakeEmbedder, k: int = 5) -> DemoIndex:
    index = DemoIndex(embedder, k=k)
    for i, text in EXAMPLES.items():
        index.upsert(i, text, [Span(0, 3, "X")])
    return index


def test_empty_index_returns_nothing_without_embedding(fake_embedder: FakeEmbedder) -> None:
    index = DemoIndex(fake_embedder)
    assert index.nearest("anything") == [] and fake_embedder.calls == []


def test_most_similar_last_and_k(fake_embedder: FakeEmbedder) -> None:
    index = make_index(fake_embedder, k=2)
    demos = index.nearest("aspirin caused headache and nausea today")
    assert [d.text for d in demos] == [EXAMPLES["2"], EXAMPLES["3"]]  # 3 shares more words: last
    assert [d.text for d in index.nearest("aspirin caused headache and nausea today", k=3)][-2:] == [
        EXAMPLES["2"], EXAMPLES["3"]]
    assert len(index.nearest("x", k=10)) == 4 and index.nearest("x", k=0) == []
    assert demos[-1].spans == [Span(0, 3, "X")]


def test_the_query_itself_is_never_a_demo(fake_embedder: FakeEmbedder) -> None:
    index = make_index(fake_embedder)
    texts = [d.text for d in index.nearest(EXAMPLES["3"])]
    assert EXAMPLES["3"] not in texts and len(texts) == 3
    assert EXAMPLES["3"] not in [d.text for d in index.nearest(f"  {EXAMPLES['3']}\n")]


def test_only_new_or_changed_texts_are_embedded(fake_embedder: FakeEmbedder) -> None:
    index = make_index(fake_embedder)
    assert sorted(fake_embedder.embedded) == sorted(EXAMPLES.values())
    fake_embedder.calls.clear()
    index.upsert("2", EXAMPLES["2"], [Span(0, 7, "Chemical")])  # new spans, same text: no embedding
    index.upsert("5", EXAMPLES["1"], [])  # a text already known under another id: no embedding
    assert fake_embedder.calls == []
    index.upsert("2", "a brand new text", [])
    assert fake_embedder.embedded == ["a brand new text"]
    assert index.upsert_many([("6", "t six", []), ("7", "t seven", []), ("8", "t six", [])]) == 2


def test_updated_spans_and_removal_show_in_results(fake_embedder: FakeEmbedder) -> None:
    index = make_index(fake_embedder, k=1)
    index.upsert("3", EXAMPLES["3"], [Span(0, 7, "Chemical")])
    assert index.nearest("headache and nausea")[-1].spans == [Span(0, 7, "Chemical")]
    assert index.remove("3") and not index.remove("3") and "3" not in index
    assert index.nearest("headache and nausea")[-1].text == EXAMPLES["2"]


def test_duplicate_texts_give_one_demo(fake_embedder: FakeEmbedder) -> None:
    index = make_index(fake_embedder)
    index.upsert("9", EXAMPLES["2"], [])
    texts = [d.text for d in index.nearest("aspirin")]
    assert len(texts) == len(set(texts)) == 4


def test_concurrent_upserts_and_queries(fake_embedder: FakeEmbedder) -> None:
    index = DemoIndex(fake_embedder, k=3)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(30):
                index.upsert(f"{n}-{i}", f"text {n} number {i}", [])
                if i % 3 == 0:
                    index.remove(f"{n}-{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(60):
                assert len(index.nearest("text number 3")) <= 3
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(index) == 4 * 20


def test_real_sentence_embedder_finds_the_topical_neighbour() -> None:
    from training.embedder import SentenceEmbedder

    index = DemoIndex(SentenceEmbedder(), k=2)
    index.upsert_many([
        ("a", "The football team won the championship final.", []),
        ("b", "Intravenous haloperidol induced severe hypotension in two patients.", [Span(13, 24, "Chemical")]),
        ("c", "The central bank raised interest rates again.", []),
    ])
    demos = index.nearest("Lidocaine caused hypotension and bradycardia.")
    assert len(demos) == 2 and demos[-1].text.startswith("Intravenous haloperidol")
    assert demos[-1].spans == [Span(13, 24, "Chemical")]
