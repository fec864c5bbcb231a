"""Atomic file writes: a file is either its old content or its new content, never half."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    A crash (even ``kill -9``) leaves either the previous file or the complete new one; an
    exception inside the block discards the new content. The folder is created if needed.

    Args:
        path: the file to write.
        mode: ``"wb"`` or ``"w"`` (text is UTF-8).
        durable: ``fsync`` the data before the rename, so it also survives a power loss.

    Example:
        >>> with atomic_file("annotations.json", "w") as handle:  # doctest: +SKIP
        ...     handle.write("{}")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:80]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`).

    Example:
        >>> atomic_write_bytes("labels/a.txt", b"0 0.5 0.5 0.2 0.2\\n")  # doctest: +SKIP
    """
    with atomic_file(path, durable=durable) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text.

    Example:
        >>> atomic_write_text("data.yaml", "nc: 1\\n")  # doctest: +SKIP
    """
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike, *, durable: bool = True) -> None:
    """Copy a file's bytes to ``dst`` atomically (see :func:`atomic_file`).

    Example:
        >>> atomic_copy("photos/a.jpg", "dataset/images/a.jpg")  # doctest: +SKIP
    """
    with atomic_file(dst, durable=durable) as out, open(src, "rb") as source:
        shutil.copyfileobj(source, out, 1 << 20)


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike, *, symbolic: bool) -> None:
    """Point ``dst`` at ``src`` (hard or symbolic link), replacing ``dst`` atomically.

    Example:
        >>> atomic_link("photos/a.jpg", "dataset/images/a.jpg", symbolic=True)  # doctest: +SKIP
    """
    target = Path(dst)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name[:80]}.{os.getpid()}.link.tmp"
    tmp.unlink(missing_ok=True)
    if symbolic:
        os.symlink(os.path.abspath(src), tmp)
    else:
        os.link(src, tmp)
    os.replace(tmp, target)
