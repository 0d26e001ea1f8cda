"""`llmaaa export-model`: a trained student as a standard Hugging Face token-classification checkpoint.

The directory loads with `transformers.pipeline("token-classification", model=DIR)` and nothing of
llmaaa: weights + `config.json` (with `id2label` / `label2id`), the tokenizer, a README model card
(training data, metrics, dates, how to get llmaaa's exact spans), and `export_info.json` (provenance; also
lets `llmaaa extract --model DIR` name the source version). `labels.json` stays too, so llmaaa can load
the export as a student again.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from llmaaa.extract import EXPORT_INFO, ResolvedModel, load_tagger, read_json_object, resolve_model

# The snippet below is copied into every model card and executed by the tests (tests/llmaaa/
# test_docs_export.py), so what the card tells users is what is checked.
WORD_SPANS_SNIPPET = '''\
import re

from transformers import pipeline

ner = pipeline("token-classification", model=MODEL_DIR, aggregation_strategy="none", ignore_labels=[])


def word_spans(text):
    """Entity spans over whitespace-delimited words, decoded exactly as `llmaaa extract` does.

    A word's tag is the tag of its first sub-token; chunks are IOB2 (an I-X that does not continue an X
    starts a new entity); an entity's score is the mean top-tag probability over its words.
    """
    words = [m.span() for m in re.finditer(r"\\S+", text)]
    first = {}
    for tok in ner(text):
        for i, (a, b) in enumerate(words):
            if a <= tok["start"] < b:
                first.setdefault(i, tok)
                break
    spans, cur = [], None
    for i, (a, b) in enumerate(words):
        tok = first.get(i)
        tag = tok["entity"] if tok else "O"
        prefix, _, label = tag.partition("-")
        if cur and prefix == "I" and label == cur["label"]:
            cur["end"], cur["scores"] = b, cur["scores"] + [float(tok["score"])]
            continue
        if cur:
            spans.append(cur)
            cur = None
        if prefix in ("B", "I"):
            cur = {"start": a, "end": b, "label": label, "scores": [float(tok["score"])]}
    if cur:
        spans.append(cur)
    return [{"start": s["start"], "end": s["end"], "label": s["label"], "text": text[s["start"]:s["end"]],
             "score": sum(s["scores"]) / len(s["scores"])} for s in spans]
'''


def _fmt_metric(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _metrics_rows(metrics: dict[str, Any]) -> list[str]:
    rows = []
    evaluation = metrics.get("eval") or {}
    for name, key in (("held-out verified tasks, student", "student"), ("held-out verified tasks, LLM", "llm")):
        prf = evaluation.get(key)
        if isinstance(prf, dict):
            rows.append(f"| {name} ({evaluation.get('held_out', '?')} tasks) | {_fmt_metric(prf.get('precision'))} "
                        f"| {_fmt_metric(prf.get('recall'))} | {_fmt_metric(prf.get('f1'))} |")
    if "dev_f1" in metrics:
        rows.append(f"| meta/dev set ({metrics.get('n_meta', '?')} sentences) | "
                    f"{_fmt_metric(metrics.get('dev_precision'))} | {_fmt_metric(metrics.get('dev_recall'))} | "
                    f"{_fmt_metric(metrics.get('dev_f1'))} |")
    for label, prf in sorted((metrics.get("dev_per_type") or {}).items()):
        if isinstance(prf, dict):
            rows.append(f"| meta/dev set, {label} | {_fmt_metric(prf.get('precision'))} | "
                        f"{_fmt_metric(prf.get('recall'))} | {_fmt_metric(prf.get('f1'))} |")
    return rows


MODEL_CARD = Template("""---
library_name: transformers
pipeline_tag: token-classification
tags:
- token-classification
- ner
- llmaaa
---

# $source_version: NER student exported by llmaaa

A token-classification model (IOB2 tags over whitespace-delimited words) trained by llmaaa
(LLMaAA, Zhang et al. 2023: an LLM pre-annotates, a student model learns from those labels, each sentence
re-weighted against human-verified examples).

- entity types: $types
- labels (`id2label`): $labels
- trained: $trained_at; exported: $exported_at
- source version: `$source_version`; architecture: `$architecture`
- maximum input: $max_length sub-tokens (longer inputs are truncated by the pipeline;
  `llmaaa extract` splits documents into sentences and long sentences into overlapping windows instead)

## Training data
$data_lines
$recipe

## Metrics
Entity-level, strict (seqeval), as recorded when the model was trained.

| evaluation | precision | recall | F1 |
|---|---|---|---|
$metric_rows

## Usage
```python
from transformers import pipeline

ner = pipeline("token-classification", model="path/to/this/directory", aggregation_strategy="first")
ner("Aspirin can induce asthma .")
```

The model tags each **whitespace-delimited word** by its first sub-token, and was trained that way (the
other sub-tokens carried no loss). The tokenizer is uncased. On text whose punctuation is already split off
by spaces (like the training sentences), `aggregation_strategy="first"` returns exactly the spans
`llmaaa extract` writes. On raw text, the pipeline's own word splitting also cuts punctuation off a word
("aspirin," becomes "aspirin" + ","), and the model's output at such untrained positions can split or
merge entities. This function gives llmaaa's spans exactly on any text:

```python
$snippet
```
""")


def model_card(info: dict[str, Any], metrics: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The README.md of an export: front matter for the Hub, then what, from what, how good, how to use."""
    labels = info["labels"]
    types = sorted({lab[2:] for lab in labels if lab.startswith(("B-", "I-"))})
    extra = {k: v for k, v in manifest.items() if k not in ("version", "created_at", "labels", "files")}
    data_lines = [f"- `{k}`: {v}" for k, v in sorted(extra.items())]
    if "n_train" in metrics:
        data_lines.append(f"- training sentences (LLM-labelled): {metrics['n_train']}")
    if "n_meta" in metrics:
        data_lines.append(f"- gold meta/dev sentences (human-verified): {metrics['n_meta']}")
    if not data_lines:
        data_lines = ["- not recorded for this model"]
    metric_rows = _metrics_rows(metrics) or ["| (no metrics recorded) | | | |"]
    config = metrics.get("config") or {}
    recipe = ", ".join(f"{k}={config[k]}" for k in ("max_epochs", "batch_size", "encoder_lr", "head_lr", "reweight")
                       if k in config)
    snippet = WORD_SPANS_SNIPPET.replace("MODEL_DIR", '"path/to/this/directory"')
    return MODEL_CARD.substitute(
        source_version=info["source_version"], types=", ".join(f"`{t}`" for t in types),
        labels=", ".join(f"{i}=`{lab}`" for i, lab in enumerate(labels)),
        trained_at=info.get("trained_at") or "unknown", exported_at=info["exported_at"],
        architecture=info.get("architecture") or "unknown", max_length=info["max_length"],
        data_lines="\n".join(data_lines), recipe=f"- recipe: {recipe}" if recipe else "",
        metric_rows="\n".join(metric_rows), snippet=snippet)


def export_model(spec: str | Path, out: str | Path, data_dir: Path | None = None, project: int | None = None,
                 force: bool = False) -> Path:
    """Write the model `spec` (a version name or directory, as for `llmaaa extract`) to `out`."""
    resolved: ResolvedModel = resolve_model(spec, data_dir, project)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
    tagger = load_tagger(resolved.model_dir)
    config = tagger.model.config
    # The pipeline names tags by `id2label`; a default config says LABEL_0, LABEL_1, ...
    config.id2label = dict(enumerate(tagger.labels))
    config.label2id = {lab: i for i, lab in enumerate(tagger.labels)}
    # The pipeline truncates at the tokenizer's model_max_length: make it the student's own limit.
    tagger.tokenizer.model_max_length = tagger.max_length
    manifest = read_json_object(resolved.version_dir / "manifest.json") if resolved.version_dir else {}
    metrics = read_json_object(resolved.version_dir / "metrics.json") if resolved.version_dir else {}
    previous = read_json_object(resolved.model_dir / EXPORT_INFO)  # re-exporting an export keeps its provenance
    info = {
        "source_version": resolved.version,
        "source_dir": str(resolved.version_dir or resolved.model_dir),
        "trained_at": manifest.get("created_at") or previous.get("trained_at"),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": list(tagger.labels),
        "max_length": int(tagger.max_length),
        "architecture": f"{config.model_type}, {getattr(config, 'num_hidden_layers', '?')} layers, "
                        f"hidden size {getattr(config, 'hidden_size', '?')}",
        "metrics": {k: metrics[k] for k in ("dev_precision", "dev_recall", "dev_f1", "eval") if k in metrics}
        or previous.get("metrics", {}),
        "training": {k: v for k, v in manifest.items() if k not in ("files", "labels")} or previous.get("training", {}),
    }
    if not metrics and previous.get("metrics"):
        metrics = previous["metrics"]
    # Written beside the target and renamed at the end, so a failed export leaves no half directory.
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tagger.save(tmp)
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(info, metrics, manifest or info["training"]), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
