"""Official RAM / RAM++ checkpoint keys -> :class:`~ovperc.stages.ram.model.RamModel` keys.

The official checkpoints hold the whole training model under ``checkpoint["model"]``.
Tagging needs only part of it; the rest is dropped by name, before any tensor is read:

- ``vision_multi.*`` (older files) is the tagging head: renamed ``tagging_head.*``;
- ``*.relative_position_index`` and ``*.attn_mask`` are buffers the model rebuilds;
- ``tag_encoder.*`` and ``text_decoder.*`` (RAM's captioning parts) are unused;
- official Swin merges patches at the end of a stage, timm at the start of the next one:
  ``visual_encoder.layers.{i}.downsample.*`` -> ``visual_encoder.layers.{i+1}.downsample.*``.

Every other key is already the name used here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

#: Top-level names the tagging model is made of.
TAGGING_PREFIXES = (
    "visual_encoder.",
    "image_proj.",
    "tagging_head.",
    "wordvec_proj.",
    "fc.",
)
TAGGING_KEYS = ("label_embed", "reweight_scale")
_DROPPED_SUFFIXES = ("relative_position_index", "attn_mask")
_DOWNSAMPLE = re.compile(r"^visual_encoder\.layers\.(\d+)\.downsample\.")
#: Present only in the official layout (timm has no downsample in stage 0).
OFFICIAL_LAYOUT_MARKER = "visual_encoder.layers.0.downsample.reduction.weight"


def is_official_layout(keys: Iterable[str]) -> bool:
    """True when the keys use the official Swin layout (patch merging at the end of a stage)."""
    return any(key.removeprefix("module.") == OFFICIAL_LAYOUT_MARKER for key in keys)


def remap_key(key: str, *, official_layout: bool = True) -> str | None:
    """The ovperc name for one official key, or None when tagging does not use it.

    Example:
        >>> remap_key("visual_encoder.layers.0.downsample.norm.weight")
        'visual_encoder.layers.1.downsample.norm.weight'
        >>> remap_key("vision_multi.encoder.layer.0.output.dense.bias")
        'tagging_head.encoder.layer.0.output.dense.bias'
        >>> remap_key("text_decoder.cls.predictions.bias") is None
        True
    """
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("vision_multi."):
        key = "tagging_head." + key[len("vision_multi."):]
    if key.endswith(_DROPPED_SUFFIXES):
        return None
    if key not in TAGGING_KEYS and not key.startswith(TAGGING_PREFIXES):
        return None
    if official_layout:
        key = _DOWNSAMPLE.sub(lambda m: f"visual_encoder.layers.{int(m[1]) + 1}.downsample.", key)
    return key


def remap_state_dict(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Keep the tagging entries of an official state dict, under ovperc names.

    Values are passed through untouched (no tensor is read or copied), so a state dict
    loaded with ``mmap=True`` stays on disk for every dropped entry. A state dict already
    in ovperc's layout is returned unchanged (minus unused keys).

    Example:
        >>> sorted(remap_state_dict({"fc.bias": 0, "tag_encoder.x": 1, "vision_multi.y": 2}))
        ['fc.bias', 'tagging_head.y']
    """
    official = is_official_layout(state_dict)
    out: dict[str, T] = {}
    for key, value in state_dict.items():
        new = remap_key(key, official_layout=official)
        if new is None:
            continue
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new!r}; is the checkpoint merged twice?")
        out[new] = value
    return out


def extract_state_dict(checkpoint: Any) -> Mapping[str, Any]:
    """The state dict inside a loaded checkpoint (``checkpoint["model"]`` for the official files).

    Raises:
        TypeError: the object holds no state dict.

    Example:
        >>> extract_state_dict({"model": {"fc.bias": 0}, "epoch": 3})
        {'fc.bias': 0}
    """
    if isinstance(checkpoint, Mapping):
        for name in ("model", "state_dict", "model_state_dict"):
            inner = checkpoint.get(name)
            if isinstance(inner, Mapping):
                return inner
        if all(isinstance(key, str) for key in checkpoint):
            return checkpoint
    raise TypeError(
        f"expected a checkpoint dict holding a state dict (under 'model' for the official "
        f"RAM files), got {type(checkpoint).__name__}"
    )
