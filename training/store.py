"""Versioned, atomically written model directories.

A save writes everything into `root/.tmp-<uuid>/`, fsyncs it, writes `manifest.json` last and only
then renames the directory to `root/<version>`. A reader therefore never sees a partial model: a
directory counts as a version only if its name is a version name and it holds a manifest.
Versions sort lexically in creation order: `v0007-20261129T041233Z` (counter, then UTC time).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.model import StudentTagger

MANIFEST = "manifest.json"
METRICS = "metrics.json"
SENTENCE_WEIGHTS = "sentence_weights.json"
MODEL_DIR = "model"
_VERSION = re.compile(r"^v(\d{4,})-\d{8}T\d{6}Z$")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())


class ModelStore:
    """`root/<version>/{model/, metrics.json, sentence_weights.json, manifest.json}`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and _VERSION.match(p.name) and (p / MANIFEST).is_file()
        )

    def latest(self) -> str | None:
        found = self.versions()
        return found[-1] if found else None

    def path(self, version: str) -> Path:
        """The directory of a complete version (FileNotFoundError otherwise)."""
        if not _VERSION.match(version) or not (self.root / version / MANIFEST).is_file():
            raise FileNotFoundError(f"no complete model version {version!r} in {self.root}")
        return self.root / version

    def _resolve(self, version: str | None) -> Path:
        version = version or self.latest()
        if version is None:
            raise FileNotFoundError(f"no model saved in {self.root} yet")
        return self.path(version)

    def load(self, version: str | None = None) -> StudentTagger:
        """The model of `version` (default: the latest)."""
        return StudentTagger.load(self._resolve(version) / MODEL_DIR)

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        return json.loads((self._resolve(version) / MANIFEST).read_text(encoding="utf-8"))

    def metrics(self, version: str | None = None) -> dict[str, Any]:
        return json.loads((self._resolve(version) / METRICS).read_text(encoding="utf-8"))

    def sentence_weights(self, version: str | None = None) -> dict[str, float]:
        return json.loads((self._resolve(version) / SENTENCE_WEIGHTS).read_text(encoding="utf-8"))

    def save(
        self,
        model: StudentTagger,
        metrics: Mapping[str, Any],
        sentence_weights: Mapping[str, float],
        manifest_extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a new version atomically and return its name."""
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            model.save(tmp / MODEL_DIR)
            _write_json(tmp / METRICS, dict(metrics))
            _write_json(tmp / SENTENCE_WEIGHTS, {str(k): float(v) for k, v in sentence_weights.items()})
            files = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                _fsync_path(f)
                files[str(f.relative_to(tmp))] = f.stat().st_size
            _fsync_path(tmp / MODEL_DIR)
            return self._publish(tmp, files, dict(manifest_extra or {}), model)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _publish(self, tmp: Path, files: dict[str, int], extra: dict[str, Any], model: StudentTagger) -> str:
        """Write the manifest last, then rename; retry with the next number if another saver won."""
        for _ in range(100):
            number = max((int(_VERSION.match(v).group(1)) for v in self._all_version_names()), default=0) + 1
            version = f"v{number:04d}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
            manifest = {
                **extra,
                "version": version,
                "created_at": datetime.now(UTC).isoformat(),
                "labels": model.labels,
                "files": files,
            }
            _write_json(tmp / MANIFEST, manifest)
            _fsync_path(tmp)
            try:
                os.rename(tmp, self.root / version)
            except OSError as exc:  # a concurrent save took this number: the target exists
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    time.sleep(0.01)
                    continue
                raise
            _fsync_path(self.root)
            return version
        raise RuntimeError(f"could not allocate a version name in {self.root}")

    def _all_version_names(self) -> list[str]:
        # Numbering also counts version-named dirs without a manifest, so a number is never reused.
        return [p.name for p in self.root.iterdir() if _VERSION.match(p.name)]

    def remove_stale_temps(self, older_than_s: float = 3600.0) -> list[str]:
        """Delete `.tmp-*` dirs left by crashed saves (older than `older_than_s`); return their names."""
        removed = []
        now = time.time()
        for p in self.root.glob(".tmp-*"):
            if p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed
