"""``ovperc track``'s settings are checked before any frame is decoded or model loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovperc.cli import main


@pytest.fixture
def video(tmp_path) -> Path:
    from ovperc.shapes.motion import generate_clip, write_clip_video

    return write_clip_video(generate_clip(seed=0, frames=3, size=(64, 48), radius=(6.0, 9.0)),
                            tmp_path / "clip.mp4")


@pytest.mark.parametrize(("args", "message"), [
    (["missing.mp4", "--classes", "dog"], "missing.mp4: file not found"),
    (["notes.mp4", "--classes", "dog"], "not a video FFmpeg can read"),
    (["{video}"], "no --classes or --ontology given"),
    (["{video}", "--classes", "dog", "--preset", "detect"], "tracking needs masks"),
    (["{video}", "--classes", "dog", "--out", "{video}"], "is a file, not a folder"),
])
def test_bad_settings_exit_2_with_a_message(tmp_path, video, capsys, args, message):
    (tmp_path / "notes.mp4").write_text("not a video")
    args = [a.format(video=video) for a in args]
    args = [str(tmp_path / a) if a.endswith(".mp4") and "/" not in a else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    assert main(["track", *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_numbers_are_refused_by_the_parser(video, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["track", str(video), "--classes", "dog", "--out", "o", "--detect-every", "0"])
    assert caught.value.code == 2
    assert "--detect-every: must be 1 or more" in capsys.readouterr().err


def test_track_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "track" in capsys.readouterr().out
