"""A tiny OmDet-Turbo of the real architecture, saved as a transformers folder.

Random weights with a small Swin backbone and CLIP text model; the folder holds
``config.json``, safetensors weights, the tiny CLIP tokenizer and a ``DetrImageProcessor``
config (what the hub model uses, at 640x640 there), so it loads through ``AutoProcessor``
and ``OmDetTurboForObjectDetection.from_pretrained`` like the hub model.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny.clip_tokenizer import build_tiny_clip_tokenizer, tiny_clip_vocab

IMAGE_SIZE = 128
TEXT_TOKENS = 77


def build_tiny_omdet(folder: Path, *, seed: int = 0) -> Path:
    """Build and save a tiny random OmDet-Turbo (model + processor) into ``folder``.

    Example:
        >>> path = build_tiny_omdet(tmp_path)  # doctest: +SKIP
        >>> OmDetTurboDetector(str(path)).detect([image], [["dog"]])  # doctest: +SKIP
    """
    import torch
    from transformers import (
        CLIPTextConfig,
        DetrImageProcessor,
        OmDetTurboConfig,
        OmDetTurboForObjectDetection,
        OmDetTurboProcessor,
        SwinConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = SwinConfig(image_size=IMAGE_SIZE, embed_dim=24, depths=[1, 1, 1, 1],
                          num_heads=[1, 2, 3, 4], window_size=4, out_indices=[2, 3, 4])
    text = CLIPTextConfig(vocab_size=len(tiny_clip_vocab()), hidden_size=48, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2,
                          max_position_embeddings=TEXT_TOKENS, bos_token_id=512, eos_token_id=513,
                          pad_token_id=0)
    config = OmDetTurboConfig(
        # The hub model's timm Swin returns channels-last maps and OmDet normalises them; the
        # transformers Swin backbone used here returns normalised channels-first maps already.
        backbone_config=backbone, text_config=text, use_timm_backbone=False, image_size=IMAGE_SIZE,
        apply_layernorm_after_vision_backbone=False,
        # class_embed_dim must differ from decoder_hidden_dim (as in the hub model, 512 vs
        # 256): transformers only builds the decoder's task projection when they differ.
        text_projection_in_dim=48, text_projection_out_dim=48, task_encoder_hidden_dim=64,
        class_embed_dim=48, num_queries=20, encoder_in_channels=[48, 96, 192],
        vision_features_channels=[32, 32, 32], encoder_hidden_dim=32, encoder_attention_heads=2,
        encoder_dim_feedforward=64, decoder_hidden_dim=32, decoder_num_heads=2,
        decoder_num_layers=2, decoder_dim_feedforward=64, decoder_num_points=2,
    )
    torch.manual_seed(seed)
    model = OmDetTurboForObjectDetection(config).eval()
    model.save_pretrained(folder)

    image_processor = DetrImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                         do_pad=False)
    tokenizer = build_tiny_clip_tokenizer(max_length=TEXT_TOKENS, pad_token="<|endoftext|>")
    OmDetTurboProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
