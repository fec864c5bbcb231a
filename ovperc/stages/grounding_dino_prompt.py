"""Grounding DINO text prompts: class texts, chunks under the token limit, token spans.

Grounding DINO reads one caption such as ``"person. car. traffic light."``; the ``.``
token ends a phrase (the model resets position ids and blocks attention there), so every
class is its own phrase. A caption holds at most ``max_text_len`` tokens (256) including
``[CLS]`` and ``[SEP]``; longer class lists are split into several captions, never
splitting a class and never dropping one.

Each class is located in its caption by its character range, and from the tokenizer's
offsets mapping by its token range; the detector scores classes on those token spans
instead of decoding phrases back to text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Characters that end a phrase for Grounding DINO; inside a class they would split it.
_SEPARATORS = re.compile(r"[.?]")
_SPACES = re.compile(r"\s+")
#: Tokens a caption needs besides its classes: ``[CLS]`` and ``[SEP]``.
_SPECIAL_TOKENS = 2


def class_text(prompt: str) -> str:
    """The text a prompt contributes to the caption: lowercase, single spaces, no ``.``/``?``.

    Example:
        >>> class_text("  Traffic   Light. ")
        'traffic light'
    """
    return _SPACES.sub(" ", _SEPARATORS.sub(" ", prompt.lower())).strip()


@dataclass(frozen=True)
class PromptChunk:
    """One caption and the prompts it carries.

    Attributes:
        text: the caption, e.g. ``"person. car."``.
        prompt_ids: for each class in the caption, the index of its prompt in the
            caller's prompt list.
        char_spans: for each class, its ``(start, end)`` character range in ``text``.

    Example:
        >>> PromptChunk("dog. cat.", (0, 1), ((0, 3), (5, 8))).text
        'dog. cat.'
    """

    text: str
    prompt_ids: tuple[int, ...]
    char_spans: tuple[tuple[int, int], ...]


def _caption(classes: Sequence[tuple[int, str]]) -> PromptChunk:
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    cursor = 0
    for _, text in classes:
        spans.append((cursor, cursor + len(text)))
        parts.append(text + ".")
        cursor += len(text) + 2  # the "." and the space before the next class
    return PromptChunk(" ".join(parts), tuple(i for i, _ in classes), tuple(spans))


def build_chunks(prompts: Sequence[str], tokenizer: Any, max_tokens: int) -> list[PromptChunk]:
    """Split prompts into captions of at most ``max_tokens`` tokens, keeping every class.

    Prompts are normalised with :func:`class_text`. Prompts that normalise to the same
    text appear once, under the index of their first occurrence; prompts that normalise to
    nothing (blank, only dots) cannot be searched and are left out with a warning.
    Classes keep their order; a caption is filled greedily until the next class would not
    fit.

    Args:
        prompts: the prompt texts of one image.
        tokenizer: the model's (fast) tokenizer.
        max_tokens: caption limit, ``[CLS]`` and ``[SEP]`` included.

    Raises:
        ValueError: a single class is longer than a caption can hold.

    Example:
        >>> build_chunks(["dog", "Cat"], tokenizer, 256)  # doctest: +SKIP
        [PromptChunk(text='dog. cat.', prompt_ids=(0, 1), char_spans=((0, 3), (5, 8)))]
    """
    unique: dict[str, int] = {}
    blank: list[int] = []
    for index, prompt in enumerate(prompts):
        text = class_text(prompt)
        if not text:
            blank.append(index)
        elif text not in unique:
            unique[text] = index
    if blank:
        logger.warning("prompts %s are empty after cleaning and cannot be searched",
                       [prompts[i] for i in blank])
    if not unique:
        return []

    texts = list(unique)
    counts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    _refuse_long(texts, counts, max_tokens)
    budget = max_tokens - _SPECIAL_TOKENS
    chunks: list[list[tuple[int, str]]] = [[]]
    used = 0
    for text, ids in zip(texts, counts):
        cost = len(ids) + 1  # the class tokens and its "."
        if used + cost > budget:
            chunks.append([])
            used = 0
        chunks[-1].append((unique[text], text))
        used += cost
    result = [_caption(chunk) for chunk in chunks]
    if len(result) > 1:
        logger.info("%d classes split into %d captions of <= %d tokens",
                    len(texts), len(result), max_tokens)
    return result


def check_lengths(prompts: Sequence[str], tokenizer: Any, max_tokens: int) -> None:
    """Refuse prompts that no caption of ``max_tokens`` tokens can hold, naming them all.

    Raises:
        ValueError: some prompt is longer than ``max_tokens - 3`` tokens (a caption also
            holds ``[CLS]``, the prompt's ``.`` and ``[SEP]``).

    Example:
        >>> check_lengths(["dog", "a very long prompt ..."], tokenizer, 256)  # doctest: +SKIP
    """
    texts = list(dict.fromkeys(t for t in (class_text(p) for p in prompts) if t))
    if texts:
        _refuse_long(texts, tokenizer(texts, add_special_tokens=False)["input_ids"], max_tokens)


def _refuse_long(texts: Sequence[str], token_ids: Sequence[Sequence[int]], max_tokens: int) -> None:
    most = max_tokens - _SPECIAL_TOKENS - 1  # each class also needs its "."
    long = [(text, len(ids)) for text, ids in zip(texts, token_ids) if len(ids) > most]
    if long:
        named = "; ".join(f"{text[:80]!r}{'...' if len(text) > 80 else ''} is {n} tokens"
                          for text, n in long[:5])
        more = f" (and {len(long) - 5} more)" if len(long) > 5 else ""
        raise ValueError(
            f"{len(long)} class prompt(s) too long for Grounding DINO: {named}{more}; a class "
            f"may have at most {most} tokens (a caption holds {max_tokens}, [CLS], '.' and "
            "[SEP] included): shorten it"
        )


def token_spans(
    offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of each character span, from an offsets mapping.

    A token belongs to a class when its (non-empty) character range lies inside the
    class's range; special and padding tokens have empty ranges and belong to none.

    Raises:
        ValueError: a span covers no token (the caption was truncated or mis-tokenised).

    Example:
        >>> token_spans([(0, 0), (0, 3), (3, 4), (5, 8), (8, 9), (0, 0)], [(0, 3), (5, 8)])
        [(1, 2), (3, 4)]
    """
    result: list[tuple[int, int]] = []
    for start, end in char_spans:
        inside = [t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
        if not inside:
            raise ValueError(f"no token covers characters {start}:{end} of the caption")
        result.append((inside[0], inside[-1] + 1))
    return result
