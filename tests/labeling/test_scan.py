"""Scanning: recursive, every extension in any case, sorted, safe, collision-free names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovperc.labeling.scan import output_stems, scan_images


def _touch(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_recursive_sorted_any_case_and_hidden_skipped(tmp_path: Path) -> None:
    rels = ["b.JPG", "a.jpeg", "z/y.PNG", "z/deep/x.bmp", "c.webp", "d.TIF", "e.tiff", "f.Jpg"]
    for rel in [*rels, "notes.txt", ".hidden.jpg", ".cache/inside.jpg", "g.gif"]:
        _touch(tmp_path, rel)
    found = [e.rel for e in scan_images(tmp_path)]
    assert found == ["a.jpeg", "b.JPG", "c.webp", "d.TIF", "e.tiff", "f.Jpg",
                     "z/deep/x.bmp", "z/y.PNG"]
    assert all(e.problem is None for e in scan_images(tmp_path))


def test_symlink_loop_ends_and_output_folder_is_excluded(tmp_path: Path) -> None:
    _touch(tmp_path, "a/one.jpg")
    _touch(tmp_path, "dataset/images/one.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "up")
    os.symlink(tmp_path / "a", tmp_path / "a_again")
    found = [e.rel for e in scan_images(tmp_path, exclude=[tmp_path / "dataset"])]
    assert found == ["a/one.jpg"]


def test_special_files_are_listed_with_a_problem(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    (tmp_path / "dir.jpg").mkdir()
    _touch(tmp_path, "dir.jpg/real.png")
    problems = {e.rel: e.problem for e in scan_images(tmp_path)}
    assert problems["dir.jpg/real.png"] is None
    assert "pipe" in problems["pipe.jpg"] and "broken" in problems["dangling.png"]


def test_single_file_and_missing_source(tmp_path: Path) -> None:
    _touch(tmp_path, "only.png")
    assert [e.rel for e in scan_images(tmp_path / "only.png")] == ["only.png"]
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_images(tmp_path / "nope")


def test_output_stems_never_collide_and_are_stable() -> None:
    rels = ["a.jpg", "a.png", "x/a.jpg", "x__a.jpg", "A.JPG", "r/é 1.png", "q/b:c.png"]
    stems = output_stems(rels)
    assert len({s.casefold() for s in stems.values()}) == len(rels)
    assert stems["x/a.jpg"] == "x__a" and stems["r/é 1.png"] == "r__é 1"
    assert "/" not in "".join(stems.values()) and ":" not in "".join(stems.values())
    assert output_stems(reversed(rels)) == stems
    # stems from an earlier run are kept, even when new files now sort before them
    reserved = {"x/a.jpg": stems["x/a.jpg"]}
    again = output_stems(["x__a.jpg", *rels], reserved=reserved)
    assert again["x/a.jpg"] == "x__a" and again["x__a.jpg"] != "x__a"
