"""The manifest: signature checks, torn log lines, stable class ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovperc.labeling.manifest import Manifest, ManifestMismatchError


def test_resume_reads_done_and_classes(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path, {"format": "yolo"}, classes=["cat"])
    manifest.set_classes(["cat", "dog"])
    manifest.record([{"rel": "a.jpg", "stem": "a", "counts": {"cat": 1}}])
    again = Manifest.open(tmp_path, {"format": "yolo"})
    assert again.classes == ["cat", "dog"] and again.stems() == {"a.jpg": "a"}
    with pytest.raises(ValueError, match="must not move"):
        again.set_classes(["dog", "cat"])


def test_changed_signature_is_refused_with_the_difference(tmp_path: Path) -> None:
    Manifest.open(tmp_path, {"format": "yolo", "classes": {"cat": "cat"}})
    with pytest.raises(ManifestMismatchError, match=r"classes: was \{'cat': 'cat'\}"):
        Manifest.open(tmp_path, {"format": "yolo", "classes": {"dog": "dog"}})


def test_torn_last_line_is_dropped_and_appending_continues(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path, {"v": 1})
    manifest.record([{"rel": "a.jpg", "stem": "a"}])
    with open(manifest.log_path, "ab") as handle:
        handle.write(b'{"rel": "b.jpg", "st')  # a crash in the middle of a line
    again = Manifest.open(tmp_path, {"v": 1})
    assert list(again.done) == ["a.jpg"]
    again.record([{"rel": "c.jpg", "stem": "c"}])
    lines = again.log_path.read_text().splitlines()
    assert [json.loads(line)["rel"] for line in lines] == ["a.jpg", "c.jpg"]
