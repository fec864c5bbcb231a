"""A tiny CLIP byte-level BPE tokenizer, saved in the transformers format (no download).

Token ids follow the real CLIP vocabulary's layout: the 256 byte characters first (``!`` is
id 0, which OWL treats as padding), then the same characters ending a word (``</w>``), then
``<|startoftext|>`` and ``<|endoftext|>`` (the highest id: CLIP pools the text at its
argmax). There are no merges, so every word is one token per character.
"""

from __future__ import annotations


def _byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_clip_vocab() -> dict[str, int]:
    """Token -> id: characters, characters ending a word, then the two special tokens."""
    chars = _byte_characters()
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_clip_tokenizer(*, max_length: int, pad_token: str = "!"):
    """A ``CLIPTokenizer`` over :func:`tiny_clip_vocab` that pads to ``max_length``.

    Example:
        >>> tokenizer = build_tiny_clip_tokenizer(max_length=16)  # doctest: +SKIP
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_clip_vocab(), merges=[], pad_token=pad_token,
                         model_max_length=max_length)
