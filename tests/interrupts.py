"""Ctrl-C in tests that stop a real ``ovperc`` process with SIGINT."""

from __future__ import annotations

import signal


def ctrl_c_reaches_child() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child takes SIGINT as a terminal's Ctrl-C.

    A test suite started in the background by a shell without job control runs with SIGINT
    ignored, and a child inherits that, so the Ctrl-C the test sends would never arrive.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
