"""A tiny SAM of the real segment-anything architecture, saved as a ``.pth`` state dict.

The network is built straight from ``segment_anything.modeling`` (not through ovperc), so
tests can compare ovperc's loader and inference against segment-anything's own
``SamPredictor`` on the same weights. The input stays 1024x1024 with 16-pixel patches (a
64x64 embedding, as in SAM); only the widths and depths are small. Next to
``tiny_sam.pth`` lies ``tiny_sam.json``, the architecture in the fields of
``ovperc.stages.sam.SamArchitecture`` (the decoder head count is not visible in the shapes).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

#: The tiny architecture, in ``SamArchitecture`` field names.
TINY_SAM = {
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "encoder_window_size": 14,
    "encoder_mlp_ratio": 2.0,
    "patch_size": 16,
    "image_size": 1024,
    "prompt_embed_dim": 32,
    "mask_in_chans": 8,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "decoder_attention_downsample_rate": 2,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 32,
}


def tiny_sam_module(seed: int = 0):
    """The tiny network with deterministic random weights (``segment_anything.modeling.Sam``)."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    arch = TINY_SAM
    grid = arch["image_size"] // arch["patch_size"]
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=arch["image_size"],
            patch_size=arch["patch_size"],
            embed_dim=arch["encoder_embed_dim"],
            depth=arch["encoder_depth"],
            num_heads=arch["encoder_num_heads"],
            mlp_ratio=arch["encoder_mlp_ratio"],
            out_chans=arch["prompt_embed_dim"],
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=arch["encoder_window_size"],
            global_attn_indexes=tuple(arch["encoder_global_attn_indexes"]),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch["prompt_embed_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(arch["image_size"], arch["image_size"]),
            mask_in_chans=arch["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=arch["decoder_depth"],
                embedding_dim=arch["prompt_embed_dim"],
                mlp_dim=arch["decoder_mlp_dim"],
                num_heads=arch["decoder_num_heads"],
                attention_downsample_rate=arch["decoder_attention_downsample_rate"],
            ),
            transformer_dim=arch["prompt_embed_dim"],
            iou_head_depth=arch["iou_head_depth"],
            iou_head_hidden_dim=arch["iou_head_hidden_dim"],
        ),
    )
    # Position tables start at zero in SAM; give them values so every weight matters.
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if "pos" in name and not param.any():
                param.normal_(std=0.1)
    return sam.eval()


def build_tiny_sam(folder: Path) -> Path:
    """Save the tiny SAM as ``folder/tiny_sam.pth`` (+ ``tiny_sam.json``); returns the ``.pth`` path."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_sam.pth"
    torch.save(tiny_sam_module().state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(TINY_SAM, indent=2))
    return path


def reference_sam(path: Path):
    """The tiny network with the weights saved at ``path``, built without ovperc."""
    import torch

    sam = tiny_sam_module(seed=1)
    sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return sam.eval()
