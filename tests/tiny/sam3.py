"""A tiny SAM 3 (``Sam3Model`` + ``Sam3Processor``) saved as a transformers folder.

The real model class with a small random config: a 2-layer ViT on 112 px images (14-pixel
patches, as SAM 3), a 2-layer CLIP text encoder, one-layer DETR encoder and decoder with
12 queries. The CLIP tokenizer is the tiny byte-level one of :mod:`tests.tiny.clip_tokenizer`
(one token per character), so nothing downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tiny.clip_tokenizer import build_tiny_clip_tokenizer
from tests.tiny.sam_hf import tiny_sam3_vision

#: Factor on the scoring, presence and mask heads' random weights (see :func:`tiny_sam3`).
SHARPEN = 4.0
#: Phrase limit of SAM 3's text encoder, ``[SOT]`` and ``[EOT]`` included.
MAX_TOKENS = 32


def tiny_sam3(seed: int = 0) -> tuple[Any, Any]:
    """The tiny ``Sam3Model`` (random weights, eval mode) and its ``Sam3Processor``."""
    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    tokenizer = build_tiny_clip_tokenizer(max_length=MAX_TOKENS)
    layers = {"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
              "dropout": 0.0}
    config = Sam3Config(
        vision_config=tiny_sam3_vision(),
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "projection_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": MAX_TOKENS, "hidden_act": "gelu",
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        geometry_encoder_config={**layers, "roi_size": 3},
        detr_encoder_config=layers,
        detr_decoder_config={**layers, "num_queries": 12},
        mask_decoder_config={"hidden_size": 32, "num_upsampling_stages": 2, "num_attention_heads": 2},
    )
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    # At this size the random heads give every query a score of ~0.25 and every mask pixel
    # ~0.5; scaled up, scores spread over ~0.1-0.4 and masks over both sides of 0.5, so
    # thresholds keep some instances and pixels and drop others.
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.startswith(("dot_product_scoring.", "detr_decoder.presence", "mask_decoder.")):
                weight.mul_(SHARPEN)
    images = Sam3ImageProcessor(size={"height": 112, "width": 112}, mask_size={"height": 32, "width": 32})
    return model, Sam3Processor(image_processor=images, tokenizer=tokenizer)


def build_tiny_sam3(folder: Path) -> Path:
    """Save the tiny SAM 3 and its processor (with tokenizer) in ``folder``; returns it."""
    folder = Path(folder)
    model, processor = tiny_sam3()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
