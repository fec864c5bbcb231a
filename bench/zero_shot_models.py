"""Random full-size zero-shot detectors (MM Grounding DINO, OWLv2, OmDet-Turbo), saved.

Each is the real architecture at the published size of its hub checkpoint, with random
weights (they cost the same time as trained ones), saved as a ``save_pretrained`` folder
with its processor, so ovperc loads it through the registry like the downloaded model:

- ``mm-gdino-tiny``: ``MMGroundingDinoConfig()`` = Swin-T + BERT-base, 900 queries, 6+6
  layers, as ``iSEE-Laboratory/llmdet_tiny`` / ``openmmlab-community/mm_grounding_dino_tiny_*``;
  processor 800/1333 and the benchmark WordPiece vocabulary of :mod:`common`.
- ``owlv2-base``: ``Owlv2Config`` with a ViT-B/16 at 960 px (as
  ``google/owlv2-base-patch16-ensemble``'s ``config.json``: ``image_size`` 960), CLIP text
  model (512 wide, 12 layers, 16 tokens), the real 49,408-token CLIP BPE vocabulary
  (open_clip ships it).
- ``omdet-turbo``: ``OmDetTurboConfig()`` = timm ``swin_tiny_patch4_window7_224`` at 640 px,
  CLIP text model, 900 queries, 6 decoder layers (as ``omlab/omdet-turbo-swin-tiny-hf``),
  ``DetrImageProcessor`` at 640x640.

Example:
    >>> from zero_shot_models import build_owlv2  # doctest: +SKIP
    >>> build_owlv2(Path("/tmp/models/owlv2-base"))  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
from pathlib import Path

import common


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file()


def clip_bpe_tokenizer(max_length: int, pad_token: str):
    """The real CLIP byte-level BPE tokenizer, built from open_clip's bundled merges."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges),
              "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token,
                         model_max_length=max_length)


def build_mm_grounding_dino(folder: Path, *, seed: int = 0) -> Path:
    """Random ``MMGroundingDinoConfig()`` (LLMDet / MM-GDINO tiny), saved with its processor."""
    folder = Path(folder)
    if _complete(folder):
        return folder
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
    )

    folder.mkdir(parents=True, exist_ok=True)
    config = MMGroundingDinoConfig()
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(common._wordpiece_vocab(config.text_config.vocab_size)) + "\n")
    torch.manual_seed(seed)
    model = MMGroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333}),
        tokenizer=BertTokenizerFast(vocab=str(vocab_path), do_lower_case=True),
    )
    processor.save_pretrained(folder)
    model.save_pretrained(folder)  # last: its file marks the folder complete
    return folder


def build_owlv2(folder: Path, *, seed: int = 0) -> Path:
    """Random OWLv2 ViT-B/16 at 960 px (as owlv2-base-patch16-ensemble), saved with its processor."""
    folder = Path(folder)
    if _complete(folder):
        return folder
    import torch
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    config = Owlv2Config(vision_config={"image_size": 960, "patch_size": 16})
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 960, "width": 960}),
                               tokenizer=clip_bpe_tokenizer(16, "!"))
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def build_omdet_turbo(folder: Path, *, seed: int = 0) -> Path:
    """Random ``OmDetTurboConfig()`` (Swin-T, as omdet-turbo-swin-tiny-hf), saved with its processor."""
    folder = Path(folder)
    if _complete(folder):
        return folder
    import torch
    from transformers import (
        DetrImageProcessor,
        OmDetTurboConfig,
        OmDetTurboForObjectDetection,
        OmDetTurboProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    config = OmDetTurboConfig()
    torch.manual_seed(seed)
    model = OmDetTurboForObjectDetection(config).eval()
    processor = OmDetTurboProcessor(
        image_processor=DetrImageProcessor(size={"height": 640, "width": 640}, do_pad=False),
        tokenizer=clip_bpe_tokenizer(77, "<|endoftext|>"),
    )
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def build_all(root: Path) -> dict[str, Path]:
    """Short name -> folder of every backend the benchmark times (built once)."""
    return {
        "gdino-tiny": common.build_grounding_dino(root / "gdino-swin-t"),
        "mm-gdino-tiny": build_mm_grounding_dino(root / "mm-gdino-swin-t"),
        "owlv2-base": build_owlv2(root / "owlv2-base-patch16"),
        "omdet-turbo": build_omdet_turbo(root / "omdet-turbo-swin-t"),
    }
