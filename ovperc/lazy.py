"""Package attributes imported on first use, so ``import ovperc`` stays light (no torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], names: Iterable[str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose ``exports`` (name -> module) load lazily.

    A name whose module is the name itself under ``package`` (``"stages"`` ->
    ``"ovperc.stages"``) is that submodule.

    Example:
        >>> __getattr__, __dir__ = lazy_exports(__name__, {"Pipeline": "ovperc.pipeline"},
        ...                                     __all__)  # doctest: +SKIP
    """
    listed = sorted(names)

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        return module if exports[name] == f"{package}.{name}" else getattr(module, name)

    def dir_() -> list[str]:
        return listed

    return getattr_, dir_
