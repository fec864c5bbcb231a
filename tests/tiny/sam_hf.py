"""Tiny transformers SAM-family models (SAM, SAM-HQ, SAM 2.1, EdgeTAM, SAM 3 tracker).

Each is the real model class with a small random config, saved with ``save_pretrained``
together with its processor, so the folder loads offline through ``AutoProcessor`` and the
model class like a hub checkpoint. Inputs are 256 px (112 px for SAM 3's 14-pixel
patches) instead of 1024 / 1008; EdgeTAM keeps its real timm RepViT-M1 backbone (4.8 M
parameters), the others have a few thousand-wide layers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: ``model_type`` of every tiny model built here.
KINDS = ("sam", "sam_hq", "sam2", "edgetam", "sam3_tracker")

_PROMPT = {"hidden_size": 32, "image_size": 256, "patch_size": 16, "mask_input_channels": 4}
_DECODER = {"hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "iou_head_hidden_dim": 32}
_SAM_VIT = {"hidden_size": 32, "output_channels": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 256, "patch_size": 16, "window_size": 4, "global_attn_indexes": [1],
            "mlp_dim": 64, "num_pos_feats": 16}
_FEATURES_256 = [[64, 64], [32, 32], [16, 16]]


def tiny_model_and_processor(kind: str, seed: int = 0) -> tuple[Any, Any]:
    """A tiny model of ``kind`` (a ``model_type``) with random weights, and its processor."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    sam_images = tf.SamImageProcessor(size={"longest_edge": 256}, pad_size={"height": 256, "width": 256})
    sam2_images = tf.Sam2ImageProcessor(size={"height": 256, "width": 256})
    if kind == "sam":
        config = tf.SamConfig(vision_config=_SAM_VIT, prompt_encoder_config=_PROMPT,
                              mask_decoder_config=_DECODER)
        return tf.SamModel(config), tf.SamProcessor(image_processor=sam_images)
    if kind == "sam_hq":
        config = tf.SamHQConfig(vision_config=_SAM_VIT, prompt_encoder_config=_PROMPT,
                                mask_decoder_config={**_DECODER, "vit_dim": 32})
        return tf.SamHQModel(config), tf.SamHQProcessor(image_processor=sam_images)
    if kind == "sam2":
        hiera = {"model_type": "sam2_hiera_det_model", "hidden_size": 16, "num_attention_heads": 1,
                 "image_size": [256, 256], "blocks_per_stage": [1, 1, 2, 1],
                 "embed_dim_per_stage": [16, 32, 64, 128], "num_attention_heads_per_stage": [1, 1, 2, 2],
                 "window_size_per_stage": [4, 4, 4, 4], "global_attention_blocks": [3],
                 "window_positional_embedding_background_size": [4, 4]}
        config = tf.Sam2Config(
            vision_config={"backbone_config": hiera, "backbone_channel_list": [128, 64, 32, 16],
                           "backbone_feature_sizes": _FEATURES_256, "fpn_hidden_size": 32},
            prompt_encoder_config=_PROMPT, mask_decoder_config=_DECODER)
        return tf.Sam2Model(config), tf.Sam2Processor(image_processor=sam2_images)
    if kind == "edgetam":
        repvit = tf.TimmWrapperConfig(architecture="repvit_m1", model_args={
            "in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
        config = tf.EdgeTamConfig(
            vision_config={"backbone_config": repvit, "backbone_feature_sizes": _FEATURES_256,
                           "fpn_hidden_size": 32},
            prompt_encoder_config=_PROMPT, mask_decoder_config=_DECODER)
        return tf.EdgeTamModel(config), tf.Sam2Processor(image_processor=sam2_images)
    if kind == "sam3_tracker":
        config = tf.Sam3TrackerConfig(
            vision_config=tiny_sam3_vision(),
            prompt_encoder_config={**_PROMPT, "image_size": 112, "patch_size": 14},
            mask_decoder_config=_DECODER)
        images = tf.Sam3ImageProcessor(size={"height": 112, "width": 112},
                                       mask_size={"height": 32, "width": 32})
        return tf.Sam3TrackerModel(config), tf.Sam3TrackerProcessor(image_processor=images)
    raise ValueError(f"unknown tiny kind {kind!r}; known: {KINDS}")


def tiny_sam3_vision() -> dict[str, Any]:
    """The vision config shared by the tiny SAM 3 detector and tracker: a 2-layer ViT on 112 px."""
    return {
        "backbone_config": {"model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64,
                            "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 112,
                            "patch_size": 14, "window_size": 4, "global_attn_indexes": [1],
                            "pretrain_image_size": 56},
        "fpn_hidden_size": 32,
        "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
    }


def build_tiny_sam_hf(kind: str, folder: Path) -> Path:
    """Save the tiny ``kind`` model and its processor in ``folder``; returns the folder."""
    folder = Path(folder)
    model, processor = tiny_model_and_processor(kind)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
