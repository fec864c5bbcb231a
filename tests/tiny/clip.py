"""A tiny open_clip model of the real CLIP architecture, saved in open_clip's hub format."""

from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_clip(folder: Path, *, seed: int = 0) -> str:
    """Write a tiny random CLIP (ViT 2x32 at 64 px, text 2x32, real BPE vocabulary).

    The folder holds ``open_clip_config.json`` and ``open_clip_model.safetensors``, the
    layout open_clip reads from ``hf-hub:`` repos and local folders.

    Returns:
        The spec string a user would pass: the folder path.

    Example:
        >>> spec = build_tiny_clip(tmp_path)  # doctest: +SKIP
        >>> ClipModel(spec).encode_texts(["a cat"]).shape  # doctest: +SKIP
        torch.Size([1, 32])
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_CLIP_CONFIG)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return str(folder)
