"""Atomic file writes: a file is either its old content or its new content, never half.

Every temporary file is named ``.<name>.ovperc-<random>.tmp`` beside its target
(:func:`temp_prefix`), so a run that was killed half-way can find and remove its own
leftovers, and nothing else (:func:`remove_temporaries`). A written file gets the
permissions the umask gives any new file, not the private mode of a temporary file.
"""

from __future__ import annotations

import os
import secrets
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
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.name), suffix=TEMP_SUFFIX)
    try:
        if hasattr(os, "fchmod"):  # POSIX: the mode any new file gets, not mkstemp's 0600
            os.fchmod(fd, 0o666 & ~current_umask())
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
    tmp = target.parent / f"{temp_prefix(target.name)}{secrets.token_hex(4)}{TEMP_SUFFIX}"
    if symbolic:
        os.symlink(os.path.abspath(src), tmp)
    else:
        os.link(src, tmp)
    os.replace(tmp, target)


#: the end of every temporary file name ovperc writes.
TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """How the temporary files written for a target file ``name`` begin.

    Example:
        >>> temp_prefix("a.jpg")
        '.a.jpg.ovperc-'
    """
    return f".{name[:80]}.ovperc-"


def remove_temporaries(folder: str | os.PathLike, names: set[str]) -> list[Path]:
    """Remove the temporary files a killed write left in ``folder`` for the targets ``names``.

    Only files named as :func:`atomic_file` names its temporaries *for one of* ``names`` are
    touched, so a caller that passes the names its manifest recorded never removes a file
    it did not write.

    Returns:
        The files removed.

    Example:
        >>> remove_temporaries("dataset/labels", {"a.txt"})  # doctest: +SKIP
        [PosixPath('dataset/labels/.a.txt.ovperc-k2j4_x.tmp')]
    """
    folder = Path(folder)
    prefixes = {temp_prefix(name) for name in names}
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX) and ".ovperc-" in name):
            continue
        if name[: name.rindex(".ovperc-") + len(".ovperc-")] in prefixes:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Example:
        >>> 0 <= current_umask() <= 0o777
        True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, then put it back at once
    os.umask(mask)
    return mask
