"""Small value types shared by every stage."""

from __future__ import annotations

from typing import NamedTuple


class Tag(NamedTuple):
    """An image-level tag with its score in [0, 1].

    Example:
        >>> Tag("dog", 0.91)
        Tag(name='dog', score=0.91)
    """

    name: str
    score: float
