"""Tiny transformers video trackers (SAM 2.1 video, EdgeTAM video, SAM 3 tracker video).

Each is the real video model class with a small random config, saved with
``save_pretrained`` together with its video processor (image and video processor configs,
as on the hub), so the folder loads offline like a hub checkpoint. The image side is the
tiny model of :mod:`tests.tiny.sam_hf` with 128-wide features: transformers fixes the memory
features at 64 channels whatever the config says, and its object pointers only reshape
right when the feature width is a multiple above that (with 64 they fail); the memory
attention, memory encoder and mask downsampler are shrunk to match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tiny.sam_hf import tiny_model_and_processor, tiny_sam3_vision

#: ``model_type`` of every tiny video model built here.
KINDS = ("sam2_video", "edgetam_video", "sam3_tracker_video")

_WIDTH = 128
_SIZE = 128  # input pixels
_PROMPT = {"hidden_size": _WIDTH, "image_size": _SIZE, "patch_size": 16, "mask_input_channels": 4}
_DECODER = {"hidden_size": _WIDTH, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "iou_head_hidden_dim": 32}
_MEMORY = {
    "memory_attention_hidden_size": _WIDTH, "memory_attention_num_layers": 1,
    "memory_attention_feed_forward_hidden_size": 64, "memory_encoder_hidden_size": _WIDTH,
    "memory_encoder_output_channels": 64, "mask_downsampler_embed_dim": _WIDTH,
    "memory_fuser_embed_dim": _WIDTH, "memory_fuser_intermediate_dim": 64,
    # a short memory (3 frames, 4 object pointers) so tests reach past it in a few frames
    "num_maskmem": 3, "max_object_pointers_in_encoder": 4,
}


def tiny_video_model_and_processor(kind: str, seed: int = 0) -> tuple[Any, Any]:
    """A tiny video model of ``kind`` (a ``model_type``) with random weights, and its processor."""
    import torch
    import transformers as tf

    if kind not in KINDS:
        raise ValueError(f"unknown tiny video kind {kind!r}; known: {KINDS}")
    torch.manual_seed(seed)
    image_model, image_processor = tiny_model_and_processor(kind.removesuffix("_video"), seed)
    images = image_processor.image_processor
    if kind == "sam3_tracker_video":  # a 2-layer ViT on 112 px (14-pixel patches): 8x8 tokens
        vision = tf.Sam3VisionConfig(**{**tiny_sam3_vision(), "fpn_hidden_size": _WIDTH})
        config = tf.Sam3TrackerVideoConfig(
            vision_config=vision, prompt_encoder_config={**_PROMPT, "image_size": 112, "patch_size": 14},
            mask_decoder_config=_DECODER, memory_attention_rope_feat_sizes=[8, 8], image_size=112,
            **_MEMORY)
        videos = tf.Sam2VideoVideoProcessor(size={"height": 112, "width": 112})
        return tf.Sam3TrackerVideoModel(config), tf.Sam3TrackerVideoProcessor(images, videos)
    size = {"height": _SIZE, "width": _SIZE}
    images.size = size
    videos = tf.Sam2VideoVideoProcessor(size=size)
    vision = image_model.config.vision_config.to_dict()
    vision["fpn_hidden_size"] = _WIDTH
    vision["backbone_config"]["image_size"] = [_SIZE, _SIZE]
    vision["backbone_feature_sizes"] = [[_SIZE // s, _SIZE // s] for s in (4, 8, 16)]
    common = {"vision_config": vision, "prompt_encoder_config": _PROMPT, "mask_decoder_config": _DECODER,
              "image_size": _SIZE, "memory_attention_rope_feat_sizes": [_SIZE // 16] * 2}
    if kind == "sam2_video":
        config = tf.Sam2VideoConfig(**common, **_MEMORY)
        return tf.Sam2VideoModel(config), tf.Sam2VideoProcessor(images, videos)
    memory = {k: v for k, v in _MEMORY.items() if k != "memory_attention_feed_forward_hidden_size"}
    config = tf.EdgeTamVideoConfig(  # its perceiver squeezes each memory frame to 16 + 4x4 latents
        **common, **memory, memory_attention_mlp_hidden_size=64, memory_attention_rope_k_sizes=[4, 4],
        perceiver_resampler_num_latents=16, perceiver_resampler_num_latents_2d=16,
        perceiver_resampler_hidden_size=64, perceiver_resampler_num_layers=1,
        perceiver_resampler_mlp_intermediate_size=64)
    return tf.EdgeTamVideoModel(config), tf.Sam2VideoProcessor(images, videos)


def build_tiny_sam_video(kind: str, folder: Path) -> Path:
    """Save the tiny video ``kind`` model and its processor in ``folder``; returns the folder."""
    folder = Path(folder)
    model, processor = tiny_video_model_and_processor(kind)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
