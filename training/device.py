"""Where the student runs: `STUDENT_DEVICE=auto|cpu|cuda`, and mixed precision on CUDA only.

`auto` means CUDA when torch sees a GPU, else the CPU. An explicit `cuda` without a usable GPU is an
error, not a silent CPU fallback: a GPU worker that quietly trains on its CPU is what this prevents.
Only standard torch calls are used on the CUDA path (`.to(device)`, `torch.autocast`); no GPU was
reachable when this was written, so that path is tested only for its CPU-side decisions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
ENV_VAR = "STUDENT_DEVICE"


def requested_device(name: str | None = None) -> str:
    """The requested device name: `name`, else `STUDENT_DEVICE`, else `auto` (validated)."""
    chosen = (name if name is not None else os.environ.get(ENV_VAR, "") or "auto").strip().lower()
    if chosen not in DEVICES:
        raise ValueError(f"student device must be one of {DEVICES}, not {chosen!r} (see {ENV_VAR})")
    return chosen


def resolve_device(name: str | None = None) -> torch.device:
    """`auto` → CUDA if available else CPU; `cuda` without a GPU raises; `None` reads `STUDENT_DEVICE`."""
    chosen = requested_device(name)
    if chosen == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if chosen == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"{ENV_VAR}/device 'cuda' was requested but torch sees no CUDA device "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use 'cpu' or 'auto'"
        )
    return torch.device(chosen)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 on a CUDA GPU that supports it, else None (full precision; no loss scaler needed)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def mixed_precision(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """`torch.autocast` on CUDA (bf16); a no-op on the CPU, where it would only slow MiniLM down."""
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
