"""Dynamic int8 quantization of a model's linear layers, for faster inference on a CPU.

``quantize="int8"`` on a stage replaces, once when the model loads, every ``nn.Linear`` of
the parts the stage names (an image encoder, a detector) by PyTorch's dynamically quantized
linear layer: weights stored as int8 with one scale per output channel, activations
quantized per call from their observed range, products accumulated in int32 and returned in
float32. Convolutions, attention products, normalisation and everything else still run in
float32, so the result is close to the float model's but not identical (see
``bench/RESULTS.md``, "Fast on a CPU", for the measured agreement).

It runs on the CPU only (the fbgemm / x86 kernels use AVX2 or AVX-512) and in float32: a
stage asked for ``quantize="int8"`` on a GPU or in half precision raises a ``ValueError``
when it is built.

Example:
    >>> check_quantize(None), check_quantize("int8")
    (None, 'int8')
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The quantization modes a stage accepts (``None``: the float model, unchanged).
QUANTIZE_MODES = ("int8",)
#: Linear layers kept in float32 by default: the sampling offsets and weights of deformable
#: attention (an int8 rounding error there moves the sampled points; on the trained
#: shapes-tiny detector quantizing them cost 0.02 box mAP@0.5, keeping them cost nothing) and
#: the box-regression heads of DETR-style detectors. They are a small share of the work.
KEEP_FLOAT = ("sampling_offsets", "attention_weights", "bbox_embed", "encoder_output_bbox_embed")


def check_quantize(quantize: str | None, *, device: Any = None, dtype: Any = None) -> str | None:
    """``quantize`` checked: ``None`` (or ``"none"``) or one of :data:`QUANTIZE_MODES`.

    Args:
        quantize: the stage's ``quantize`` option.
        device: the stage's device, when known: int8 needs the CPU.
        dtype: the stage's dtype, when known: int8 needs ``float32``.

    Raises:
        ValueError: an unknown mode, or int8 asked for on a GPU or in half precision.

    Example:
        >>> check_quantize("none") is None
        True
        >>> check_quantize("int4")
        Traceback (most recent call last):
        ...
        ValueError: quantize must be None or one of ('int8',), got 'int4'
    """
    if quantize is None or quantize == "none":
        return None
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None or one of {QUANTIZE_MODES}, got {quantize!r}")
    if device is not None and str(getattr(device, "type", device)).split(":")[0] not in ("cpu",):
        raise ValueError(f"quantize={quantize!r} runs on the CPU only, got device {str(device)!r}; "
                         "use dtype='float16' or 'bfloat16' on a GPU instead")
    if dtype is not None and str(dtype).removeprefix("torch.") != "float32":
        raise ValueError(f"quantize={quantize!r} needs dtype 'float32', got "
                         f"{str(dtype).removeprefix('torch.')!r}")
    return quantize


def quantize_linear(
    module: torch.nn.Module, quantize: str | None, *, keep_float: Sequence[str] = KEEP_FLOAT
) -> torch.nn.Module:
    """``module`` with every ``nn.Linear`` replaced, in place, by a dynamic int8 linear layer.

    ``quantize=None`` returns the module unchanged. Layers that PyTorch does not quantize
    dynamically (the output projection inside ``nn.MultiheadAttention``) stay in float32.

    Args:
        module: a float32 module on the CPU, in eval mode.
        quantize: ``None`` or ``"int8"``.
        keep_float: names of submodules left in float32: every ``nn.Linear`` whose
            qualified name has one of them as a dotted component is kept (default
            :data:`KEEP_FLOAT`).

    Returns:
        The same module object (changed in place).

    Example:
        >>> import torch
        >>> net = quantize_linear(torch.nn.Sequential(torch.nn.Linear(8, 4)).eval(), "int8")
        >>> type(net[0]).__name__
        'Linear'
        >>> type(net[0]).__module__
        'torch.ao.nn.quantized.dynamic.modules.linear'
    """
    if check_quantize(quantize) is None:
        return module
    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization warns that it will move to torchao; its dynamic int8 linear
        # layer is what runs here (torch 2.14), so only that warning is silenced, here only.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao.*")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as error:  # torch moved eager-mode quantization to torchao
            raise RuntimeError(f"quantize={quantize!r} needs torch.ao.quantization.quantize_dynamic, "
                               f"which this torch {torch.__version__} lacks; use quantize=None") from error

        spec: dict[Any, Any] = {torch.nn.Linear: per_channel_dynamic_qconfig}
        kept = set(keep_float)
        for name, child in module.named_modules():
            if isinstance(child, torch.nn.Linear) and kept & set(name.split(".")):
                spec[name] = None
        quantize_dynamic(module, spec, inplace=True)
    return module
