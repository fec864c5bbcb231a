"""Atomic writes: the old content or the complete new one, never a partial file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovperc.atomic import atomic_copy, atomic_file, atomic_write_text


def test_a_failure_inside_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "annotations.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_file(target, "w") as handle:
            handle.write("new, but")
            raise RuntimeError("half way")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["annotations.json"]


def test_text_bytes_and_copies_land_whole(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "a" / "b.txt", "w", durable=False) as handle:
        handle.write("héllo")
    assert (tmp_path / "a" / "b.txt").read_bytes() == "héllo".encode()
    atomic_copy(tmp_path / "a" / "b.txt", tmp_path / "c" / "d.txt")
    assert (tmp_path / "c" / "d.txt").read_text(encoding="utf-8") == "héllo"
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing.txt", tmp_path / "c" / "d.txt")
    assert (tmp_path / "c" / "d.txt").read_text(encoding="utf-8") == "héllo"
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["d.txt"]
