"""Device and precision choice, in one place for every stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DtypeName = Literal["float32", "float16", "bfloat16"]
DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for a name; ``"auto"`` picks cuda, then mps, then cpu.

    Example:
        >>> str(resolve_device("cpu"))
        'cpu'
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The torch dtype for a name; half precision only on CUDA (and MPS for float16).

    Example:
        >>> import torch
        >>> resolve_dtype("float32", torch.device("cpu"))
        torch.float32
    """
    import torch

    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(
            dtype, dtype
        )
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if name != "float32" and device.type == "cpu":
        raise ValueError(f"dtype {name} needs a GPU; on cpu use float32")
    if name == "bfloat16" and device.type == "mps":
        raise ValueError("bfloat16 is not supported on mps; use float16 or float32")
    return getattr(torch, name)
