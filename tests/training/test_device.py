"""STUDENT_DEVICE handling, checked on a CPU-only machine (no GPU run was made)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_testdata import synthetic_set

from training import device as dv
from training.model import StudentTagger
from training.trainer import TrainConfig, train


def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_cpu_without_cuda_and_cuda_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dv.ENV_VAR, raising=False)
    no_cuda(monkeypatch)
    assert dv.resolve_device("auto") == torch.device("cpu")
    assert dv.resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dv.resolve_device("auto") == torch.device("cuda")  # only a name: nothing touches a GPU


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    no_cuda(monkeypatch)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        dv.resolve_device("cuda")
    monkeypatch.setenv(dv.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="STUDENT_DEVICE"):
        dv.resolve_device(None)


def test_environment_variable_and_bad_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dv.ENV_VAR, " CPU ")
    assert dv.resolve_device(None) == torch.device("cpu")
    assert dv.requested_device("auto") == "auto"  # an explicit name wins over the environment
    monkeypatch.setenv(dv.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="STUDENT_DEVICE"):
        dv.resolve_device(None)
    with pytest.raises(ValueError):
        TrainConfig(device="gpu")


def test_mixed_precision_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    with dv.mixed_precision(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert dv.autocast_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dv.autocast_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dv.autocast_dtype(torch.device("cuda")) is None  # fp16 would need a loss scaler: full precision


def test_training_asks_for_cuda_without_one(tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_cuda(monkeypatch)
    data = synthetic_set(4, seed=1, prefix="t")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        train(data, data, TrainConfig(device="cuda"), encoder=tiny_encoder, progress=False)
    result = train(data, data, TrainConfig(max_epochs=1, device="auto"), encoder=tiny_encoder, progress=False)
    assert result.metrics["device"] == "cpu" and result.model.device == torch.device("cpu")


def test_saved_model_loads_onto_the_requested_device(tiny_encoder: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    no_cuda(monkeypatch)
    tagger = StudentTagger.from_pretrained(["Chemical"], tiny_encoder)
    tagger.save(tmp_path / "m")
    loaded = StudentTagger.load(tmp_path / "m", device="cpu")
    assert {p.device for p in loaded.model.parameters()} == {torch.device("cpu")}
    monkeypatch.setenv(dv.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):  # a serving process told to use a GPU it lacks
        StudentTagger.load(tmp_path / "m")
    monkeypatch.setenv(dv.ENV_VAR, "auto")
    assert StudentTagger.load(tmp_path / "m").device == torch.device("cpu")
