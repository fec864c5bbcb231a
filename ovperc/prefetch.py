"""Decode images in background threads while the models run."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from ovperc.image import ImageError, ImageSource, load_image

T = TypeVar("T")


def prefetch(
    items: Iterable[T], work: Callable[[T], object], *, workers: int = 2, lookahead: int = 8
) -> Iterator[tuple[T, Future]]:
    """Run ``work`` on items in a thread pool, yielding ``(item, future)`` in input order.

    At most ``lookahead`` items are in flight, so memory stays flat on long inputs.

    Example:
        >>> [f.result() for _, f in prefetch([1, 2, 3], lambda x: x * 2)]
        [2, 4, 6]
    """
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ovperc-decode") as pool:
        pending: deque[tuple[T, Future]] = deque()
        for item in items:
            pending.append((item, pool.submit(work, item)))
            if len(pending) >= max(1, lookahead):
                yield pending.popleft()
        while pending:
            yield pending.popleft()


def decode_images(
    sources: Iterable[ImageSource], *, workers: int = 2, lookahead: int = 8, max_pixels: int | None = None
) -> Iterator[tuple[ImageSource, np.ndarray | ImageError]]:
    """Yield ``(source, image)`` in order, or ``(source, ImageError)`` for a bad input.

    Example:
        >>> for source, image in decode_images(["a.jpg", "b.png"]):  # doctest: +SKIP
        ...     print(source, getattr(image, "shape", image))
    """
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    for source, future in prefetch(
        sources, lambda s: load_image(s, **kwargs), workers=workers, lookahead=lookahead
    ):
        try:
            yield source, future.result()
        except ImageError as error:
            yield source, error
