"""A tracking run's outputs, written from exact tracks: every file says what the tracks are."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovperc.shapes.world import CLASSES
from ovperc.video.output import DatasetOptions
from ovperc.video.run import track_video
from tests.video.fakes import OracleTracker


def _run(clip, source, out, **options):
    options.setdefault("chunk_frames", 6)
    return track_video(OracleTracker(clip), source, out, classes=list(CLASSES), **options)


def _mot(path):
    rows = [line.split(",") for line in path.read_text().splitlines()]
    return [(int(r[0]), int(r[1]), *(round(float(v)) for v in r[2:6])) for r in rows]


def test_every_output_holds_the_tracks(tmp_path, small_clip, small_video):
    out = tmp_path / "out"
    report = _run(small_clip, small_video, out, dataset=DatasetOptions(every=5, format="yolo"))
    assert report.exit_code == 0, report.summary()
    assert report.frames_done == report.frames_this_run == len(small_clip)
    # MOT: 1-based frames, the true ids and boxes (x, y, w, h)
    expected = [(f.index + 1, int(t), *(round(v) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])))
                for f in small_clip for t, b in zip(f.track_ids, f.xyxy)]
    assert _mot(out / "tracks.txt") == expected
    # id PNGs: each pixel holds the id of the shape there
    frame = small_clip.frame(7)
    ids = np.asarray(Image.open(out / "masks" / "000007.png"))
    for track_id, mask in zip(frame.track_ids, frame.masks):
        assert (ids[mask] == track_id).all()
    assert (ids[~frame.masks.any(0)] == 0).all()
    # COCO with track ids, readable by pycocotools
    from pycocotools.coco import COCO

    coco = COCO(str(out / "tracks.json"))
    assert len(coco.imgs) == len(small_clip)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[8]))
    assert sorted(a["track_id"] for a in annotations) == sorted(frame.track_ids.tolist())
    assert np.array_equal(coco.annToMask(annotations[0]).astype(bool),
                          frame.masks[list(frame.track_ids).index(annotations[0]["track_id"])])
    assert json.loads((out / "tracks.json").read_text())["videos"][0]["fps"] == 10.0
    from ovperc.video.metrics import score_tracks
    from ovperc.video.output import read_tracks

    scores = score_tracks(small_clip.ground_truth(), read_tracks(out / "tracks.json"), masks=True,
                          by_class=True)
    assert (scores.mota, scores.idf1, scores.motp) == (1.0, 1.0, 1.0)
    # the annotated video: every frame, coloured where the shapes are
    from ovperc.video.reader import read_frames

    drawn = list(read_frames(out / "annotated.mp4"))
    assert len(drawn) == len(small_clip)
    # the dataset: every 5th frame, the layout `ovperc label` writes, loadable by supervision
    import supervision as sv

    assert sorted(p.name for p in (out / "dataset" / "images").iterdir()) == [
        f"clip_{i:06d}.jpg" for i in (0, 5, 10, 15)]
    ds = sv.DetectionDataset.from_yolo(str(out / "dataset" / "images"), str(out / "dataset" / "labels"),
                                       str(out / "dataset" / "data.yaml"), force_masks=True)
    _, _, det = next(d for d in ds if d[0].endswith("000010.jpg"))
    assert len(det) == len(small_clip.frame(10).track_ids)
    saved = json.loads((out / "report.json").read_text())
    assert saved["frames_done"] == len(small_clip) and saved["exit_code"] == 0


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_dataset_formats(tmp_path, small_clip, small_video, fmt):
    import supervision as sv

    out = tmp_path / fmt
    report = _run(small_clip, small_video, out, video=False, masks=False,
                  dataset=DatasetOptions(every=8, format=fmt))
    assert report.exit_code == 0
    assert not (out / "annotated.mp4").exists() and not (out / "masks").exists()
    root = out / "dataset"
    if fmt == "coco":
        ds = sv.DetectionDataset.from_coco(str(root / "images"), str(root / "annotations.json"))
    else:
        ds = sv.DetectionDataset.from_pascal_voc(str(root / "images"), str(root / "annotations"))
    assert len(ds) == 2


def test_stride_and_max_frames(tmp_path, small_clip, small_video):
    out = tmp_path / "out"
    report = _run(small_clip, small_video, out, stride=3, max_frames=4)
    assert report.frames_done == 4
    assert sorted({row[0] for row in _mot(out / "tracks.txt")}) == [1, 4, 7, 10]


def test_interrupted_run_resumes_from_its_first_unfinished_chunk(tmp_path, small_clip, small_video):
    out = tmp_path / "out"
    stopped = track_video(OracleTracker(small_clip, fail_at=9), small_video, out,
                          classes=list(CLASSES), chunk_frames=4)
    assert stopped.interrupted and stopped.exit_code == 130
    assert stopped.frames_done == 8  # chunks 0 and 1; chunk 2 (frames 8-11) was not finished
    assert (out / ".ovperc" / "pending.json").exists()  # its files are removed by the next run
    tracker = OracleTracker(small_clip)
    resumed = track_video(tracker, small_video, out, classes=list(CLASSES), chunk_frames=4)
    assert tracker.calls == [8]  # started again at the first unfinished chunk
    assert resumed.exit_code == 0 and resumed.frames_done == len(small_clip)
    rows = _mot(out / "tracks.txt")
    assert sorted({r[0] for r in rows}) == list(range(1, len(small_clip) + 1))
    before = {r[1] for r in rows if r[0] <= 8}
    after = {r[1] for r in rows if r[0] > 8}
    assert not before & after  # ids are never reused: the resumed part continues after them
    assert len(list(__import__("ovperc.video.reader", fromlist=["x"]).read_frames(out / "annotated.mp4"))) \
        == len(small_clip)


def test_settings_differ_from_the_run_in_out(tmp_path, small_clip, small_video):
    from ovperc.labeling.manifest import ManifestMismatchError

    out = tmp_path / "out"
    _run(small_clip, small_video, out, max_frames=4)
    with pytest.raises(ManifestMismatchError, match="max_frames"):
        _run(small_clip, small_video, out, max_frames=5)
    report = _run(small_clip, small_video, out, max_frames=5, overwrite=True)
    assert report.frames_done == 5


def test_foreign_files_are_never_overwritten(tmp_path, small_clip, small_video):
    from ovperc.labeling.manifest import ManifestMismatchError

    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "000002.png").write_bytes(b"mine")
    (out / "tracks.txt").write_text("my notes")
    with pytest.raises(ManifestMismatchError, match="not empty"):
        _run(small_clip, small_video, out)
    report = _run(small_clip, small_video, out, overwrite=True)
    assert (out / "masks" / "000002.png").read_bytes() == b"mine"
    assert (out / "tracks.txt").read_text() == "my notes"
    assert report.exit_code == 1 and any("tracks.txt" in n for n in report.notes)
    assert (out / "masks" / "000003.png").exists()


def test_source_inside_the_output(tmp_path, small_clip):
    from ovperc.shapes.motion import write_clip_frames

    write_clip_frames(small_clip, tmp_path / "frames")
    with pytest.raises(ValueError, match="is the source itself"):
        _run(small_clip, tmp_path / "frames", tmp_path / "frames")
    write_clip_frames(small_clip, tmp_path / "out" / "masks" / "frames")
    with pytest.raises(ValueError, match="where ovperc writes"):
        _run(small_clip, tmp_path / "out" / "masks" / "frames", tmp_path / "out")


def test_a_folder_of_frames_is_tracked_like_the_video(tmp_path, small_clip):
    from ovperc.shapes.motion import write_clip_frames

    write_clip_frames(small_clip, tmp_path / "frames")
    report = _run(small_clip, tmp_path / "frames", tmp_path / "out", video=False)
    assert report.exit_code == 0 and report.frames_done == len(small_clip)
    assert len(_mot(tmp_path / "out" / "tracks.txt")) == sum(len(f.track_ids) for f in small_clip)


def test_frame_records_round_trip_and_large_ids(small_clip):
    import dataclasses

    from ovperc.video.writers import frame_record, id_png, tracks_from_record

    tracks = next(iter(small_clip.ground_truth()))
    det = tracks.detections[:]
    det.tracker_id = det.tracker_id + 1000  # past 8 bits: the PNG becomes 16-bit
    tracks = dataclasses.replace(tracks, detections=det)
    back = tracks_from_record(json.loads(json.dumps(frame_record(tracks))), list(CLASSES))
    assert back.detections.tracker_id.tolist() == det.tracker_id.tolist()
    assert np.array_equal(back.detections.mask, det.mask)
    assert back.detections.data["class_name"].tolist() == det.data["class_name"].tolist()
    import io

    ids = np.asarray(Image.open(io.BytesIO(id_png(tracks))))
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, *det.tracker_id.tolist()}


def test_a_frame_of_another_size_in_a_folder_is_skipped(tmp_path, small_clip):
    from ovperc.shapes.motion import write_clip_frames

    write_clip_frames(small_clip, tmp_path / "frames")
    Image.new("RGB", (40, 30)).save(tmp_path / "frames" / "frame_000004.png")
    report = _run(small_clip, tmp_path / "frames", tmp_path / "out", video=False)
    assert report.frames_skipped == 1 and report.frames_done == len(small_clip) - 1
    assert report.exit_code == 1 and any("frame 4 skipped: 40x30 pixels" in n for n in report.notes)
    assert 5 not in {row[0] for row in _mot(tmp_path / "out" / "tracks.txt")}
