"""A tiny Grounding DINO of the real architecture, saved as a transformers folder.

The model has random weights; the folder holds a real ``config.json``, safetensors
weights, a WordPiece ``vocab.txt`` and the processor configs, so it loads through
``AutoProcessor`` / ``GroundingDinoForObjectDetection.from_pretrained`` like the hub model.

Grounding DINO finds phrase boundaries by token id (``[CLS]`` 101, ``[SEP]`` 102, ``.``
1012, ``?`` 1029, as in the BERT uncased vocabulary), so the vocabulary keeps those ids.
"""

from __future__ import annotations

from pathlib import Path

#: Words of the tiny vocabulary (whole words); enough for prompts past 256 tokens.
WORDS = (
    "a an the of and or with on in at to for by is it this that "
    "person people man woman child boy girl face hand head "
    "car bus truck train bicycle motorcycle boat airplane van taxi wheel "
    "traffic light sign stop parking meter bench street road sidewalk building "
    "dog cat bird horse sheep cow elephant bear zebra giraffe mouse rabbit fish "
    "red green blue yellow orange purple black white gray brown pink dark bright "
    "circle square triangle rectangle shape box ball cup bottle chair table bed "
    "tree flower grass sky cloud water sand rock mountain house door window wall "
    "small large big little tall short round flat old new left right top bottom "
    "phone laptop keyboard book clock vase scissors knife fork spoon bowl plate "
    "umbrella backpack handbag tie suitcase kite skateboard surfboard helmet hat "
    "shirt shoe glove bag lamp sofa pillow mirror sink toilet oven fridge "
    "pizza cake apple banana sandwich carrot broccoli donut orange lemon bread"
).split()

#: Word pieces so that unknown-ish words split into sub-tokens instead of [UNK].
PIECES = tuple(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789") + ("##s", "##es", "##ing")

SPECIAL_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]",
               1012: ".", 1029: "?"}
VOCAB_SIZE = 1040


def tiny_vocab() -> list[str]:
    """The vocabulary, one token per id, with BERT's special ids in their places."""
    words = list(dict.fromkeys([*WORDS, *PIECES, *"abcdefghijklmnopqrstuvwxyz0123456789", ",", "!"]))
    vocab: list[str] = []
    filler = 0
    free = iter(words)
    for idx in range(VOCAB_SIZE):
        if idx in SPECIAL_IDS:
            vocab.append(SPECIAL_IDS[idx])
        elif idx >= 104:
            token = next(free, None)
            if token is None:
                token = f"[unused{filler}]"
                filler += 1
            vocab.append(token)
        else:
            vocab.append(f"[unused{filler}]")
            filler += 1
    return vocab


def build_tiny_grounding_dino(folder: Path, *, seed: int = 0, mm: bool = False,
                              score_bias: float = 0.0) -> Path:
    """Build and save a tiny random Grounding DINO (model + processor) into ``folder``.

    With ``mm=True`` the model is an MM Grounding DINO (the LLMDet format, ``model_type``
    ``mm-grounding-dino``); ``score_bias`` sets the learned bias its contrastive head adds
    to every logit (random init leaves it 0, trained checkpoints do not).

    Example:
        >>> path = build_tiny_grounding_dino(tmp_path)  # doctest: +SKIP
        >>> GroundingDinoDetector(str(path)).detect([image], [["dog"]])  # doctest: +SKIP
    """
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_path), do_lower_case=True)

    backbone = SwinConfig(
        embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4], window_size=7,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )
    config_class, model_class = (
        (MMGroundingDinoConfig, MMGroundingDinoForObjectDetection) if mm
        else (GroundingDinoConfig, GroundingDinoForObjectDetection)
    )
    config = config_class(
        backbone_config=backbone, text_config=text, d_model=32,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30,
        encoder_n_points=2, decoder_n_points=2, max_text_len=256,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        # Spread the random token probabilities over (0, 1) instead of saturating at 0/1,
        # so thresholds in tests keep some queries and drop others.
        model.model.decoder.layer_norm.weight.mul_(0.3)
        model.model.decoder.layer_norm.bias.mul_(0.3)
        if mm:
            for head in model.class_embed:
                head.bias.fill_(score_bias)
    model.save_pretrained(folder)

    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": 256, "longest_edge": 384}
    )
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        folder
    )
    return folder
