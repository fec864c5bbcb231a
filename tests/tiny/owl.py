"""Tiny OWLv2 / OWL-ViT models of the real architectures, saved as transformers folders.

Random weights; the folder holds ``config.json``, safetensors weights, the tiny CLIP
tokenizer (:mod:`tests.tiny.clip_tokenizer`) and the image processor config, so it loads
through ``AutoProcessor`` / ``Owlv2ForObjectDetection.from_pretrained`` like the hub model.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny.clip_tokenizer import build_tiny_clip_tokenizer, tiny_clip_vocab

#: OWL's text model reads at most 16 tokens; 96 px images in 16 px patches: 36 boxes.
TEXT_TOKENS = 16
IMAGE_SIZE = 96


def build_tiny_owl(folder: Path, *, v2: bool = True, seed: int = 0) -> Path:
    """Build and save a tiny random OWLv2 (``v2=True``) or OWL-ViT into ``folder``.

    Example:
        >>> path = build_tiny_owl(tmp_path)  # doctest: +SKIP
        >>> OwlDetector(str(path)).detect([image], [["dog"]])  # doctest: +SKIP
    """
    import torch
    import transformers

    prefix = "Owlv2" if v2 else "OwlViT"
    config_class = getattr(transformers, f"{prefix}Config")
    model_class = getattr(transformers, f"{prefix}ForObjectDetection")
    processor_class = getattr(transformers, f"{prefix}Processor")
    image_processor_class = getattr(transformers, f"{prefix}ImageProcessor")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = {"vocab_size": len(tiny_clip_vocab()), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": TEXT_TOKENS}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 16}
    config = config_class(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        # Logits of about +-1 around 0 instead of saturated scores of 1.0, so thresholds
        # in tests keep some boxes and drop others.
        model.class_head.logit_scale.weight.zero_()
        model.class_head.logit_scale.bias.zero_()
        model.class_head.logit_shift.weight.mul_(0.1)
    model.save_pretrained(folder)

    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = (image_processor_class(size=size) if v2 else
                       image_processor_class(size=size, crop_size=size))
    tokenizer = build_tiny_clip_tokenizer(max_length=TEXT_TOKENS)
    processor_class(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
