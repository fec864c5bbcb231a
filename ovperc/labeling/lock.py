"""One run at a time per dataset folder: an advisory lock that a killed run cannot leave stuck."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ovperc.labeling.manifest import STATE_DIR, ManifestMismatchError


class DatasetBusyError(ManifestMismatchError):
    """Another ovperc run is writing to the same dataset folder."""


def check_unlocked(out: str | os.PathLike) -> None:
    """Refuse early when another run holds ``out`` (creates nothing; see :func:`dataset_lock`).

    Raises:
        DatasetBusyError: another run holds the folder.
    """
    if (Path(out) / STATE_DIR / "lock").is_file():
        with dataset_lock(out):
            pass


@contextlib.contextmanager
def dataset_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold ``<out>/.ovperc/lock`` for the duration of a run.

    The lock is the operating system's (``flock``): it goes with the process, so a run that
    was killed (even ``kill -9``) never leaves it held. Where ``flock`` is missing the run
    goes on unlocked.

    Raises:
        DatasetBusyError: another run holds the folder; the message names its process id.

    Example:
        >>> with dataset_lock("dataset/"):  # doctest: +SKIP
        ...     label_the_images()
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path = Path(out) / STATE_DIR / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise DatasetBusyError(
                f"another ovperc run (process {holder}) is writing to {out}; wait for it to "
                "finish, or choose another --out folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
