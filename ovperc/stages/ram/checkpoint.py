"""Reading RAM / RAM++ weights with little memory, and the slim safetensors form.

An official ``.pth`` file is opened with ``torch.load(..., mmap=True, weights_only=True)``:
tensors stay on disk until used, and the parts tagging does not need (RAM's captioning
decoder, about 3/4 of the file) are never read. :func:`convert_checkpoint` writes only
the tagging weights, under ovperc's names, to a ``.safetensors`` file, optionally with the
tag list and thresholds in its metadata, which then loads directly.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ovperc.stages.ram.model import RamConfig
from ovperc.stages.ram.remap import extract_state_dict, remap_state_dict

logger = logging.getLogger(__name__)

#: ``format`` value in the metadata of a converted file.
SLIM_FORMAT = "ovperc.ram/1"


@dataclass
class TaggingWeights:
    """The tagging weights of a checkpoint, under ovperc names, plus what its file said."""

    state_dict: dict[str, torch.Tensor]
    variant: str
    config: dict[str, Any] = field(default_factory=dict)
    tag_list: list[str] | None = None
    thresholds: list[float] | None = None


def load_tagging_weights(path: str | os.PathLike) -> TaggingWeights:
    """Read the tagging weights of an official ``.pth`` or a converted ``.safetensors`` file.

    Raises:
        ValueError: the file is not a RAM / RAM++ checkpoint.

    Example:
        >>> weights = load_tagging_weights("ram_plus_swin_large_14m.pth")  # doctest: +SKIP
        >>> weights.variant  # doctest: +SKIP
        'ram_plus'
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        logger.warning("%s is in torch's legacy format; reading it whole (no mmap)", path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = remap_state_dict(extract_state_dict(checkpoint))
    del checkpoint  # the dropped entries are released with it
    if "label_embed" not in state:
        raise ValueError(f"{path} is not a RAM / RAM++ checkpoint: it has no 'label_embed'")
    variant = "ram_plus" if "reweight_scale" in state else "ram"
    return TaggingWeights(state_dict=state, variant=variant)


def _load_safetensors(path: Path) -> TaggingWeights:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    state = load_file(str(path))
    if metadata.get("format") != SLIM_FORMAT:
        state = remap_state_dict(state)  # official names saved as safetensors by someone
    if "label_embed" not in state:
        raise ValueError(f"{path} is not a RAM / RAM++ checkpoint: it has no 'label_embed'")
    variant = metadata.get("variant") or ("ram_plus" if "reweight_scale" in state else "ram")
    return TaggingWeights(
        state_dict=state,
        variant=variant,
        config=json.loads(metadata.get("config", "{}")),
        tag_list=json.loads(metadata["tag_list"]) if "tag_list" in metadata else None,
        thresholds=json.loads(metadata["thresholds"]) if "thresholds" in metadata else None,
    )


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    tag_list: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the tagging weights of ``checkpoint`` to a slim ``.safetensors`` file.

    Args:
        checkpoint: an official ``.pth`` (or an earlier conversion).
        out_path: where to write; must end in ``.safetensors``.
        tag_list: stored in the metadata so the file loads without the tag files.
        thresholds: per-tag thresholds, stored likewise (needs ``tag_list``).
        dtype: ``float32`` keeps the weights exact; ``float16`` halves the file.

    Returns:
        The written path. It is written under a temporary name and renamed when complete.

    Example:
        >>> convert_checkpoint("ram_plus_swin_large_14m.pth", "ram_plus.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise ValueError(f"out_path must end in .safetensors, got {str(out_path)!r}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    if thresholds is not None and tag_list is None:
        raise ValueError("thresholds are stored per tag: pass tag_list with them")
    weights = load_tagging_weights(checkpoint)
    target = getattr(torch, dtype)
    state = {
        key: (value.to(target) if value.is_floating_point() else value).contiguous()
        for key, value in weights.state_dict.items()
    }
    metadata = {"format": SLIM_FORMAT, "variant": weights.variant}
    names = list(tag_list) if tag_list is not None else weights.tag_list
    if names is not None:
        config = RamConfig.from_state_dict(state, num_classes=len(names), **_head_overrides(weights))
        metadata["config"] = json.dumps(config.to_dict())
        metadata["tag_list"] = json.dumps(names, ensure_ascii=False)
        values = list(thresholds) if thresholds is not None else weights.thresholds
        if values is not None:
            if len(values) != len(names):
                raise ValueError(f"{len(values)} thresholds for {len(names)} tags")
            metadata["thresholds"] = json.dumps([float(v) for v in values])
    elif weights.config:
        metadata["config"] = json.dumps(weights.config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s (%d tensors, %s)", out, len(state), dtype)
    return out


def _head_overrides(weights: TaggingWeights) -> dict[str, Any]:
    """Config values a file states that the weights cannot show."""
    keep = ("num_attention_heads", "layer_norm_eps", "image_size")
    return {key: weights.config[key] for key in keep if key in weights.config}
