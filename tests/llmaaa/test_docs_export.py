"""`llmaaa export-model`: a standard checkpoint that `transformers.pipeline` loads without llmaaa, and that
gives the same spans as `llmaaa extract`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from llmaaa.cli import main
from llmaaa.documents import iter_documents, split_passages
from llmaaa.export import export_model
from llmaaa.extract import load_tagger, resolve_model
from tests.llmaaa.docs_support import make_tiny_encoder, make_tiny_tagger
from training.data import load_split
from training.store import ModelStore

RAW_DOCS = {
    "raw1": "Parkinson's disease, aspirin-induced asthma; Café-au-lait spots (µg/kg).\n\nα-Tocopherol and "
            "β-blockers (i.e. propranolol) were given i.v. to 3 pts. Congestive heart failure ensued.",
    "raw2": "  Naloxone-reversible, dose-dependent hypotension after 5 mg/kg i.v. clonidine. No deaths. ",
}

# Runs in a fresh interpreter (-I: no PYTHONPATH, no cwd on sys.path) with llmaaa's packages made
# unimportable, so it shows what a user without llmaaa gets.
PIPELINE_SCRIPT = textwrap.dedent('''
    import json, re, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("llmaaa", "training", "backend", "acquisition", "tests"):
                raise ImportError("llmaaa is not installed here: " + name)

    sys.meta_path.insert(0, Block())
    model_dir, texts_file = sys.argv[1], sys.argv[2]
    readme = open(model_dir + "/README.md", encoding="utf-8").read()
    snippet = re.findall(r"```python\\n(.*?)```", readme, re.S)[1]  # the card's word_spans function
    ns = {}
    exec(snippet.replace('"path/to/this/directory"', repr(model_dir)), ns)
    from transformers import pipeline

    first = pipeline("token-classification", model=model_dir, aggregation_strategy="first")
    job = json.load(open(texts_file, encoding="utf-8"))
    out = {
        "word_spans": [ns["word_spans"](t) for t in job["raw"]],
        "first": [[{"start": int(e["start"]), "end": int(e["end"]), "label": e["entity_group"]} for e in first(t)]
                  for t in job["pretokenized"]],
        "leaked": sorted(m for m in sys.modules if m.split(".")[0] in ("llmaaa", "training", "backend")),
    }
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    encoder = make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))
    tagger = make_tiny_tagger(encoder, max_length=96)
    store = ModelStore(tmp_path_factory.mktemp("data") / "projects" / "4" / "models")
    metrics = {"dev_precision": 0.61, "dev_recall": 0.52, "dev_f1": 0.5617, "n_train": 120, "n_meta": 30,
               "dev_per_type": {"Chemical": {"precision": 0.7, "recall": 0.6, "f1": 0.646}},
               "eval": {"held_out": 12, "student": {"precision": 0.5, "recall": 0.4, "f1": 0.444}},
               "config": {"max_epochs": 10, "batch_size": 8}}
    version = store.save(tagger, metrics, {}, {"project": 4, "train_tasks": 120, "verified_tasks": 42})
    return store.path(version)


@pytest.fixture(scope="module")
def exported(version_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(version_dir, tmp_path_factory.mktemp("export") / "student")


def test_export_is_a_standard_checkpoint_with_a_model_card(exported: Path, version_dir: Path) -> None:
    version = version_dir.name
    config = json.loads((exported / "config.json").read_text(encoding="utf-8"))
    labels = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert config["id2label"] == {str(i): lab for i, lab in enumerate(labels)}
    assert config["label2id"] == {lab: i for i, lab in enumerate(labels)}
    assert config["architectures"] == ["BertForTokenClassification"]
    assert (exported / "model.safetensors").is_file() and (exported / "tokenizer.json").is_file()
    tok_config = json.loads((exported / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok_config["model_max_length"] == 96  # the pipeline truncates where the student does
    card = (exported / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: token-classification")
    for expected in (version, "`Chemical`, `Disease`", "0.5617", "0.4440", "train_tasks`: 120",
                     "verified_tasks`: 42", "trained: 20", "exported: 20", "max_epochs=10"):
        assert expected in card, expected
    info = json.loads((exported / "export_info.json").read_text(encoding="utf-8"))
    assert info["source_version"] == version and info["labels"] == labels
    assert resolve_model(exported).version == version  # extract names the source version


def test_export_refuses_to_overwrite_and_the_cli_works(version_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    assert main(["export-model", "--model", str(version_dir), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["exported"] == str(out)
    assert main(["export-model", "--model", str(version_dir), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export-model", "--model", str(version_dir), "--out", str(out), "--force"]) == 0
    assert not list(tmp_path.glob(".m.tmp-*"))


def test_export_loads_back_into_llmaaa_with_or_without_labels_json(exported: Path, version_dir: Path,
                                                                   tmp_path: Path) -> None:
    texts = list(RAW_DOCS.values())
    reference = load_tagger(version_dir / "model").predict(texts)
    assert load_tagger(exported).predict(texts) == reference
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in exported.iterdir():
        if f.name not in ("labels.json", "export_info.json"):
            (bare / f.name).write_bytes(f.read_bytes())
    assert load_tagger(bare).labels == load_tagger(exported).labels
    assert load_tagger(bare).predict(texts) == reference


def _pretokenized_sentences(tokenizer: Any, path: Path, n: int) -> list[str]:
    """Training-style sentences in which every whitespace token is exactly one pre-token of the tokenizer."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    out = []
    for ex in load_split(path, limit=400):
        words = ex.text.split(" ")
        if [w for w, _ in pre.pre_tokenize_str(ex.text)] == words and len(tokenizer(ex.text)["input_ids"]) <= 96:
            out.append(ex.text)
        if len(out) == n:
            break
    return out


@pytest.mark.slow
def test_pipeline_without_llmaaa_gives_the_spans_of_llmaaa_extract(exported: Path, version_dir: Path,
                                                                   tmp_path: Path, bc5cdr_dir: Path) -> None:
    # llmaaa extract over raw documents, from the version (not the export).
    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in RAW_DOCS.items()), encoding="utf-8")
    out = tmp_path / "entities.jsonl"
    assert main(["extract", "--model", str(version_dir), "--input", str(inp), "--out", str(out),
                 "--no-progress"]) == 0
    extracted = {r["doc_id"]: r["entities"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert sum(map(len, extracted.values())) >= 8  # an empty comparison would prove nothing

    # The same passages through transformers.pipeline, in a process that cannot import llmaaa.
    passages = [(doc.doc_id, a, doc.text[a:b]) for doc in iter_documents(inp) for a, b in split_passages(doc.text)]
    tagger = load_tagger(exported)
    pretokenized = _pretokenized_sentences(tagger.tokenizer, bc5cdr_dir / "test.jsonl", 25)
    assert len(pretokenized) == 25
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"raw": [p for _, _, p in passages], "pretokenized": pretokenized}), encoding="utf-8")
    script = tmp_path / "run_pipeline.py"
    script.write_text(PIPELINE_SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", str(script), str(exported), str(job)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []

    # 1. Raw text: the card's word_spans over the pipeline == llmaaa extract, offsets and scores included.
    via_pipeline: dict[str, list[tuple[int, int, str, str]]] = {k: [] for k in RAW_DOCS}
    scores: dict[tuple[str, int], float] = {}
    for (doc_id, offset, _), spans in zip(passages, result["word_spans"], strict=True):
        for s in spans:
            via_pipeline[doc_id].append((s["start"] + offset, s["end"] + offset, s["label"], s["text"]))
            scores[(doc_id, s["start"] + offset)] = s["score"]
    for doc_id, ents in extracted.items():
        assert [(e["start"], e["end"], e["label"], e["text"]) for e in ents] == via_pipeline[doc_id]
        for e in ents:
            assert e["confidence"] == pytest.approx(scores[(doc_id, e["start"])], abs=1e-5)

    # 2. Training-style text: aggregation_strategy="first" alone already gives llmaaa's spans.
    ours = [[{"start": s.start, "end": s.end, "label": s.label} for s in spans]
            for spans in tagger.predict(pretokenized)]
    assert result["first"] == ours
    assert sum(map(len, ours)) >= 25
