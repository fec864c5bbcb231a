"""CLIP in half precision embeds images: the pixels take the dtype of the image tower's layers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ovperc.stages import ClipModel


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_clip_embeds_images_like_float32(tiny_clip, dtype):
    import open_clip

    full = ClipModel(tiny_clip, device="cpu")
    # What open_clip does for precision="bf16"/"fp16" (ClipModel(dtype=...) on a GPU): only
    # convolutions, linear layers and projections are cast; class and position embeddings
    # stay float32.
    half = copy.deepcopy(full.model)
    open_clip.model.convert_weights_to_lp(half, dtype=dtype)
    assert half.visual.class_embedding.dtype == torch.float32
    clip = ClipModel.from_modules(half, full._preprocess, full._tokenizer, name="tiny-half")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(3)]

    embedded = clip.encode_images(images)

    assert embedded.dtype == torch.float32 and embedded.shape == (3, full.embed_dim)
    assert torch.isfinite(embedded).all()
    cosine = (embedded * full.encode_images(images)).sum(dim=1)
    assert cosine.min() > 0.99
