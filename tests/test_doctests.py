"""The ``Example:`` sections of ovperc's docstrings run as written.

Examples that need model weights, the network or files a reader has are marked
``# doctest: +SKIP``; those are still compiled, so a typo in them fails too. Every other
example runs, in an empty working folder, offline.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ovperc"
#: modules that need an optional extra, and the module that extra provides.
OPTIONAL = {"ovperc.demo": "gradio", "ovperc.labeling.ray_": "ray"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules()


def test_every_module_is_collected() -> None:
    assert {"ovperc", "ovperc.pipeline", "ovperc.labeling.manifest", "ovperc.stages.sam"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix, extra in OPTIONAL.items():
        if name.startswith(prefix):
            pytest.importorskip(extra)
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        for example in test.examples:
            try:
                compile(example.source, f"{test.name} line {example.lineno}", "single")
            except SyntaxError as error:
                pytest.fail(f"{test.name}: the example does not parse: {error}\n{example.source}")
        runner.run(test, out=report.write)
    failed, _ = runner.summarize(verbose=False)
    assert failed == 0, report.getvalue()
