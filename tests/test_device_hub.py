from __future__ import annotations

import hashlib

import pytest
import torch

from ovperc.device import resolve_device, resolve_dtype
from ovperc.hub import ModelNotAvailableError, cache_dir, download_url, hub_unavailable, offline


def test_auto_device_falls_back_to_cpu_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")


@pytest.mark.parametrize(
    ("device", "dtype", "expected", "error"),
    [
        ("cpu", "float32", torch.float32, None),
        ("cpu", "fp32", torch.float32, None),
        ("cpu", torch.float32, torch.float32, None),
        ("cpu", "float16", None, "needs a GPU"),
        ("cpu", "bfloat16", None, "needs a GPU"),
        ("cpu", "int8", None, "unknown dtype"),
    ],
)
def test_dtype_rules(device, dtype, expected, error):
    if error:
        with pytest.raises(ValueError, match=error):
            resolve_dtype(dtype, torch.device(device))
    else:
        assert resolve_dtype(dtype, torch.device(device)) == expected


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OVPERC_CACHE", str(tmp_path))
    assert cache_dir("sam") == tmp_path / "sam"


def test_offline_flag_is_read_from_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline()
    error = hub_unavailable("org/model", OSError("nope"))
    assert "org/model" in str(error) and "HF_HUB_OFFLINE" in str(error)


def test_download_is_refused_offline_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="weights.pth"):
        download_url("https://example.invalid/weights.pth", None, folder=tmp_path)


def test_download_checks_sha256_and_keeps_nothing_on_mismatch(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    source = tmp_path / "src.bin"
    source.write_bytes(b"weights" * 1000)
    url = source.as_uri()
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    folder = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256"):
        download_url(url, "0" * 64, folder=folder)
    assert list(folder.iterdir()) == []
    path = download_url(url, good, folder=folder)
    assert path.read_bytes() == source.read_bytes()
    assert download_url(url, good, folder=folder) == path  # cached: no second download
