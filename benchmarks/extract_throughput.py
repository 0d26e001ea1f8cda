"""Extraction throughput of `llmaaa extract` against the student's raw forward throughput, and peak memory.

    .venv/bin/python -m benchmarks.extract_throughput [--docs 1000] [--per-doc 10] [--batch-size 32] [--model DIR]

Abstracts are built from consecutive BC5CDR test sentences (`--per-doc` each, cycling through the split
when more are needed), written as JSONL, and read back by the extractor, so reading, sentence splitting,
windowing, decoding and writing are all inside the timed run. The student is an untrained MiniLM tagger
unless `--model` names one (speed does not depend on the weights).

Raw throughput, measured in the same process on the same sentences as the extractor passes to the model:
- `forward`: `model(**batch)` on pre-tokenised, length-bucketed, padded batches (no tokenisation);
- `tagger`: the student's own marginals pass (tokenise + forward + softmax), what `predict` runs.
It is measured before and after the extraction run (the machine is shared) and averaged.

Peak memory is the process's VmHWM (peak RSS) during each extraction run, reset before it through
/proc/self/clear_refs; a run over a quarter of the documents shows whether memory grows with the collection.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import DATA, write_result
from llmaaa.documents import iter_documents, sentence_spans, split_passages
from llmaaa.extract import Extractor, JsonlWriter, load_tagger
from training.data import load_split
from training.model import StudentTagger


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def build_abstracts(path: Path, n_docs: int, per_doc: int, out: Path) -> list[list[int]]:
    """Write `n_docs` abstracts as JSONL; return each abstract's true sentence start offsets."""
    sentences = [ex.text for ex in load_split(path)]
    starts: list[list[int]] = []
    with out.open("w", encoding="utf-8") as fh:
        for d in range(n_docs):
            chunk = [sentences[(d * per_doc + i) % len(sentences)] for i in range(per_doc)]
            text = " ".join(chunk)
            offs, pos = [], 0
            for s in chunk:
                offs.append(pos)
                pos += len(s) + 1
            starts.append(offs)
            fh.write(json.dumps({"id": f"abs{d:05d}", "text": text}) + "\n")
    return starts


def raw_throughput(tagger: StudentTagger, texts: list[str], batch_size: int, buffer: int) -> dict[str, float]:
    """Sentences/s of the bare forward pass and of the tagger's marginals pass, on the same buckets."""
    t0 = time.perf_counter()
    for s in range(0, len(texts), buffer):
        tagger._infer(texts[s : s + buffer], batch_size, with_embeddings=False)
    tagger_s = time.perf_counter() - t0
    batches = []
    for s in range(0, len(texts), buffer):
        enc = tagger.encode_texts(texts[s : s + buffer])
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        batches += [tagger.collate([enc[i] for i in order[b : b + batch_size]])
                    for b in range(0, len(order), batch_size)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            tagger.model(**batch)
    forward_s = time.perf_counter() - t0
    return {"forward_sent_per_s": len(texts) / forward_s, "tagger_sent_per_s": len(texts) / tagger_s}


def extract_run(tagger: StudentTagger, docs_file: Path, out: Path, batch_size: int, limit: int | None
                ) -> dict[str, Any]:
    docs = iter_documents(docs_file)
    if limit is not None:
        docs = (d for i, d in zip(range(limit), docs, strict=False))
    reset = _reset_peak()
    rss_before = _status_kb("VmRSS")
    with out.open("w", encoding="utf-8") as fh:
        report = Extractor(tagger, "bench", batch_size).run(docs, JsonlWriter(fh), progress=False)
    row = report.to_dict()
    row["rss_before_mb"] = rss_before / 1024
    row["peak_rss_mb"] = _status_kb("VmHWM") / 1024 if reset else None
    return row


def boundary_scores(docs_file: Path, starts: list[list[int]]) -> dict[str, float]:
    """Precision/recall of the splitter's sentence starts against the corpus's own sentence starts."""
    tp = fp = fn = 0
    for doc, true in zip(iter_documents(docs_file), starts, strict=True):
        got = {a for a, _ in sentence_spans(doc.text)}
        tp += len(got & set(true))
        fp += len(got - set(true))
        fn += len(set(true) - got)
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA / "bc5cdr" / "test.jsonl")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--per-doc", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--buffer", type=int, default=1024, help="passages per extraction buffer (the default)")
    ap.add_argument("--model", type=Path, default=None, help="a saved tagger or exported checkpoint directory")
    args = ap.parse_args()

    tagger = load_tagger(args.model) if args.model else StudentTagger.from_pretrained(["Chemical", "Disease"])
    with tempfile.TemporaryDirectory() as tmp:
        docs_file = Path(tmp) / "abstracts.jsonl"
        starts = build_abstracts(args.data, args.docs, args.per_doc, docs_file)
        chars = docs_file.stat().st_size
        t0 = time.perf_counter()
        sentences = [doc.text[a:b] for doc in iter_documents(docs_file) for a, b in split_passages(doc.text)]
        split_only_s = time.perf_counter() - t0
        tagger._infer(sentences[:64], args.batch_size, with_embeddings=False)  # warm-up
        raw_before = raw_throughput(tagger, sentences, args.batch_size, args.buffer)
        small = extract_run(tagger, docs_file, Path(tmp) / "small.jsonl", args.batch_size, args.docs // 4)
        full = extract_run(tagger, docs_file, Path(tmp) / "full.jsonl", args.batch_size, None)
        raw_after = raw_throughput(tagger, sentences, args.batch_size, args.buffer)
        boundaries = boundary_scores(docs_file, starts)
    raw = {k: (raw_before[k] + raw_after[k]) / 2 for k in raw_before}
    result = {
        "docs": args.docs, "sentences_per_doc": args.per_doc, "input_mb": chars / 1e6, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "model": str(args.model or "untrained MiniLM-L6 tagger"),
        "max_length": tagger.max_length, "sentences_after_split": len(sentences),
        "split_only_s": split_only_s, "raw_before": raw_before, "raw_after": raw_after, "raw": raw,
        "extract": full, "extract_quarter": small, "splitter_boundaries": boundaries,
        "ratio_to_forward": full["passages_per_s"] / raw["forward_sent_per_s"],
        "ratio_to_tagger": full["passages_per_s"] / raw["tagger_sent_per_s"],
    }
    path = write_result("extract_throughput", result)
    print("| measure | value |\n|---|---|")
    print(f"| documents / sentences (after splitting) | {args.docs} / {len(sentences)} |")
    print(f"| raw forward (pre-tokenised batches) | {raw['forward_sent_per_s']:.0f} sentences/s |")
    print(f"| student marginals pass (tokenise + forward) | {raw['tagger_sent_per_s']:.0f} sentences/s |")
    print(f"| `llmaaa extract` end to end | {full['documents_per_s']:.1f} documents/s, "
          f"{full['passages_per_s']:.0f} sentences/s |")
    print(f"| ratio to raw forward / to marginals pass | {result['ratio_to_forward']:.2f} / "
          f"{result['ratio_to_tagger']:.2f} |")
    print(f"| time split: reading+splitting / model / writing | {full['split_seconds']:.1f} s / "
          f"{full['model_seconds']:.1f} s / {full['write_seconds']:.1f} s of {full['seconds']:.1f} s |")
    print(f"| peak RSS: {args.docs // 4} docs / {args.docs} docs (RSS before) | {small['peak_rss_mb']:.0f} MB / "
          f"{full['peak_rss_mb']:.0f} MB ({full['rss_before_mb']:.0f} MB) |")
    print(f"| splitter vs corpus sentence starts | precision {boundaries['precision']:.3f}, "
          f"recall {boundaries['recall']:.3f} |")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
