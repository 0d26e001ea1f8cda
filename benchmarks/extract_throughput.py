"""Extraction throughput of `llmaaa extract` against the student's raw forward throughput, and peak memory.

    .venv/bin/python -m benchmarks.extract_throughput [--docs 1000] [--per-doc 10] [--block 100] [--model DIR]

Abstracts are built from consecutive BC5CDR test sentences (`--per-doc` each, cycling through the split
when more are needed), written as JSONL, and read back by the extractor, so reading, sentence splitting,
windowing, decoding and writing are all inside the timed extraction. The student is an untrained MiniLM
tagger unless `--model` names one (speed does not depend on the weights).

The machine is shared, so its speed drifts; the measurements are therefore **paired**: the documents go in
blocks of `--block`, and for each block, back to back, are timed
- `forward`: `model(**batch)` on the block's sentences, pre-tokenised, length-bucketed and padded;
- `tagger`: the student's own marginals pass on the same sentences (tokenise + forward + softmax);
- `extract`: the extractor over the block's documents, appending to one output file.
Totals over all blocks give the throughputs and the ratios.

Peak memory is the process's VmHWM (peak RSS) during each block's extraction, reset before it through
/proc/self/clear_refs, next to the RSS once the model is loaded. A block's peak is set by its longest
sentences (activation size) and allocator fragmentation, not by how many documents came before.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import DATA, write_result
from llmaaa.documents import iter_documents, sentence_spans, split_passages
from llmaaa.extract import Extractor, ExtractReport, JsonlWriter, load_tagger, trim_native_heap
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
            offs, pos = [], 0
            for s in chunk:
                offs.append(pos)
                pos += len(s) + 1
            starts.append(offs)
            fh.write(json.dumps({"id": f"abs{d:05d}", "text": " ".join(chunk)}) + "\n")
    return starts


def time_forward(tagger: StudentTagger, texts: list[str], batch_size: int) -> float:
    """Seconds for the bare forward pass over `texts` (tokenised and bucketed beforehand, untimed)."""
    enc = tagger.encode_texts(texts)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    batches = [tagger.collate([enc[i] for i in order[b : b + batch_size]]) for b in range(0, len(order), batch_size)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            tagger.model(**batch)
    return time.perf_counter() - t0


def time_tagger(tagger: StudentTagger, texts: list[str], batch_size: int) -> float:
    t0 = time.perf_counter()
    tagger.word_marginals(texts, batch_size)
    return time.perf_counter() - t0


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
    ap.add_argument("--block", type=int, default=100, help="documents per paired measurement block")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", type=Path, default=None, help="a saved tagger or exported checkpoint directory")
    args = ap.parse_args()

    tagger = load_tagger(args.model) if args.model else StudentTagger.from_pretrained(["Chemical", "Disease"])
    rss_model_mb = _status_kb("VmRSS") / 1024
    totals = {"forward": 0.0, "tagger": 0.0, "extract": 0.0}
    blocks: list[dict[str, Any]] = []
    full = ExtractReport()
    with tempfile.TemporaryDirectory() as tmp:
        docs_file = Path(tmp) / "abstracts.jsonl"
        starts = build_abstracts(args.data, args.docs, args.per_doc, docs_file)
        chars = docs_file.stat().st_size
        t0 = time.perf_counter()
        n_sentences = sum(len(split_passages(doc.text)) for doc in iter_documents(docs_file))
        split_only_s = time.perf_counter() - t0
        tagger.word_marginals(["A warm-up sentence ."] * 64, args.batch_size)
        docs = iter_documents(docs_file)
        with (Path(tmp) / "entities.jsonl").open("w", encoding="utf-8") as out:
            writer = JsonlWriter(out)
            while block := list(itertools.islice(docs, args.block)):
                sentences = [d.text[a:b] for d in block for a, b in split_passages(d.text)]
                t_forward = time_forward(tagger, sentences, args.batch_size)
                t_tagger = time_tagger(tagger, sentences, args.batch_size)
                trim_native_heap()  # what the two raw passes freed must not count as the extractor's memory
                reset = _reset_peak()
                report = Extractor(tagger, "bench", args.batch_size).run(block, writer, progress=False)
                peak = _status_kb("VmHWM") / 1024 if reset else None
                for key, value in (("forward", t_forward), ("tagger", t_tagger), ("extract", report.seconds)):
                    totals[key] += value
                for key in ("documents", "passages", "windows", "chunked_passages", "entities", "split_seconds",
                            "model_seconds", "write_seconds"):
                    setattr(full, key, getattr(full, key) + getattr(report, key))
                blocks.append({"sentences": len(sentences), "forward_s": t_forward, "tagger_s": t_tagger,
                               "extract_s": report.seconds, "peak_rss_mb": peak})
        boundaries = boundary_scores(docs_file, starts)
    full.seconds = totals["extract"]
    rates = {k: full.passages / v for k, v in totals.items()}
    peaks = [b["peak_rss_mb"] for b in blocks if b["peak_rss_mb"] is not None]
    result = {
        "docs": args.docs, "sentences_per_doc": args.per_doc, "input_mb": chars / 1e6, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "model": str(args.model or "untrained MiniLM-L6 tagger"),
        "max_length": tagger.max_length, "sentences": n_sentences, "split_only_s": split_only_s,
        "seconds": totals, "sentences_per_s": rates, "documents_per_s": full.documents / totals["extract"],
        "ratio_to_forward": rates["extract"] / rates["forward"], "ratio_to_tagger": rates["extract"] / rates["tagger"],
        "extract": full.to_dict(), "rss_after_model_load_mb": rss_model_mb, "blocks": blocks,
        "splitter_boundaries": boundaries,
    }
    path = write_result("extract_throughput", result)
    print("| measure | value |\n|---|---|")
    print(f"| documents / sentences (after splitting) | {full.documents} / {full.passages} |")
    print(f"| raw forward (pre-tokenised batches) | {rates['forward']:.1f} sentences/s |")
    print(f"| student marginals pass (tokenise + forward) | {rates['tagger']:.1f} sentences/s |")
    print(f"| `llmaaa extract` end to end | {result['documents_per_s']:.2f} documents/s, "
          f"{rates['extract']:.1f} sentences/s |")
    print(f"| ratio to raw forward / to marginals pass | {result['ratio_to_forward']:.2f} / "
          f"{result['ratio_to_tagger']:.2f} |")
    print(f"| extract time: reading+splitting / model / writing | {full.split_seconds:.1f} s / "
          f"{full.model_seconds:.1f} s / {full.write_seconds:.1f} s of {full.seconds:.1f} s |")
    if peaks:
        print(f"| peak RSS per block of {args.block} docs: first / max / last (after model load) | {peaks[0]:.0f} / "
              f"{max(peaks):.0f} / {peaks[-1]:.0f} MB ({rss_model_mb:.0f} MB) |")
    print(f"| splitter vs corpus sentence starts | precision {boundaries['precision']:.3f}, "
          f"recall {boundaries['recall']:.3f} |")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
