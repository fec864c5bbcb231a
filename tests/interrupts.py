"""Ctrl-C in tests that stop a real ``ovperc`` process with SIGINT."""

from __future__ import annotations

import signal


def ctrl_c_reaches_child() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child takes SIGINT as a terminal's Ctrl-C.

    A test suite started in the background by a shell without job control runs with SIGINT
    ignored, and a child inherits that, so the Ctrl-C the test sends would never arrive.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def die_at_rename(limit: int) -> None:
    """Make this process die like ``kill -9`` (``os._exit``) at its ``limit``-th file rename.

    Every file ovperc writes lands through ``ovperc.atomic``'s rename, so this stops a run
    at a chosen point of its writing; the child scripts of the kill tests call it first.
    """
    import os

    from ovperc import atomic

    real, count = os.replace, [0]

    def replace(src: str, dst: str) -> None:
        count[0] += 1
        if count[0] == limit:
            os._exit(9)
        real(src, dst)

    atomic.os.replace = replace
