"""Tracker logic on synthetic videos: stable ids, new tracks, lost tracks, keyframes."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from ovperc import Pipeline, Tracker
from ovperc.video.segmenter import BoxPromptPropagator
from ovperc.video.types import FrameTracks, VideoFrame
from tests.video.colour_stages import ColourDetector, ColourSegmenter, frames


def _pipeline(detector: ColourDetector | None = None) -> Pipeline:
    return Pipeline(detector=detector or ColourDetector(), segmenter=ColourSegmenter())


def _ids(result: FrameTracks) -> dict[int, str]:
    return dict(zip(result.detections.tracker_id.tolist(), result.detections.data["class_name"].tolist()))


def _moving(n: int, start: tuple[int, int], step: tuple[int, int], first: int = 0) -> list:
    return [None] * first + [(start[0] + step[0] * i, start[1] + step[1] * i) for i in range(n - first)]


def test_a_square_entering_mid_video_gets_a_new_id_and_the_first_keeps_its_own():
    video = frames(30, {"red square": _moving(30, (2, 5), (2, 1)),
                        "blue square": _moving(30, (80, 50), (-1, 0), first=12)})
    tracker = Tracker(_pipeline(), detect_every=5)
    results = list(tracker.track(video, classes=["red square", "blue square"]))

    assert [r.index for r in results] == list(range(30))
    assert [r.keyframe for r in results] == [i % 5 == 0 for i in range(30)]
    for i, result in enumerate(results):
        expected = {1: "red square"} if i < 15 else {1: "red square", 2: "blue square"}
        assert _ids(result) == expected, i
        assert result.class_names == ["red square", "blue square"]
        assert result.size == (96, 64)
    # the masks follow the moving square between keyframes
    last = results[-1].detections
    red = last.mask[last.tracker_id.tolist().index(1)]
    assert red.sum() == 12 * 12
    ys, xs = np.nonzero(red)
    assert (xs.min(), ys.min()) == (2 + 2 * 29, 5 + 29)
    assert last.class_id.tolist() == [0, 1]
    np.testing.assert_array_equal(last.xyxy[0], [60, 34, 72, 46])


def test_a_track_ends_after_max_lost_frames_and_its_id_is_never_reused():
    path = _moving(8, (10, 10), (1, 0)) + [None] * 10 + _moving(12, (17, 10), (1, 0))
    video = frames(30, {"red square": path})
    segmenter = BoxPromptPropagator(ColourSegmenter())
    tracker = Tracker(_pipeline(), segmenter, detect_every=1, max_lost=3)
    results = list(tracker.track(video, classes="red square"))

    seen = [list(_ids(r)) for r in results]
    assert seen[:8] == [[1]] * 8
    assert seen[8:18] == [[]] * 10
    assert seen[18:] == [[2]] * 12  # the square is back: a new track, a new id
    assert list(segmenter._boxes) == []  # the track's state is freed at the end of the run


def test_a_lost_object_found_again_before_max_lost_keeps_its_id():
    path = _moving(6, (10, 10), (1, 0)) + [None] * 3 + _moving(21, (19, 10), (1, 0))
    video = frames(30, {"red square": path})
    results = list(Tracker(_pipeline(), detect_every=1, max_lost=10).track(video, classes="red square"))
    assert {i for r in results for i in _ids(r)} == {1}
    assert [len(r.detections) for r in results[6:9]] == [0, 0, 0]


@pytest.mark.parametrize("detect_every, calls", [(1, 23), (5, 5), (10, 3), (50, 1)])
def test_the_detector_runs_on_every_detect_every_th_frame(detect_every, calls):
    detector = ColourDetector()
    segmenter = ColourSegmenter()
    pipe = Pipeline(detector=detector, segmenter=segmenter)
    video = frames(23, {"red square": _moving(23, (2, 2), (1, 1))})
    results = list(pipe.track(video, "red square", detect_every=detect_every))
    assert detector.calls == calls
    assert sum(r.keyframe for r in results) == calls
    assert segmenter.images == 23  # one image segmenter call per frame, keyframes included
    assert {i for r in results for i in _ids(r)} == {1}


def test_ids_start_at_first_id_for_a_resumed_run():
    video = frames(4, {"red square": _moving(4, (2, 2), (1, 0)), "blue square": _moving(4, (60, 40), (0, 0))})
    results = list(Tracker(_pipeline(), detect_every=2).track(video, "red square, blue square", first_id=8))
    assert [sorted(_ids(r)) for r in results] == [[8, 9]] * 4
    with pytest.raises(ValueError, match="first_id"):
        next(Tracker(_pipeline()).track(video, "red square", first_id=0))


def test_class_is_the_majority_of_the_keyframes_labels():
    # the third keyframe labels the red square as blue: it stays red
    detector = ColourDetector(rename={2: "blue square"})
    video = frames(20, {"red square": _moving(20, (2, 2), (1, 0))})
    results = list(Tracker(_pipeline(detector), detect_every=2).track(video, ["red square", "blue square"]))
    assert all(_ids(r) == {1: "red square"} for r in results)
    assert all(r.detections.class_id.tolist() == [0] for r in results)


def test_frames_keep_their_own_index_and_timestamp_and_stream_lazily():
    video = frames(6, {"red square": _moving(6, (2, 2), (1, 0))})
    source = (VideoFrame(10 + 2 * i, image, 0.5 * i) for i, image in enumerate(video))
    stream = Tracker(_pipeline(), detect_every=3).track(source, "red square")
    first = next(stream)
    assert (first.index, first.timestamp, first.keyframe) == (10, 0.0, True)
    rest = list(stream)
    assert [(r.index, r.timestamp) for r in rest] == [(12, 0.5), (14, 1.0), (16, 1.5), (18, 2.0), (20, 2.5)]
    assert [r.keyframe for r in rest] == [False, False, True, False, False]


def test_bad_frames_and_settings_are_clear_errors():
    pipe = _pipeline()
    good = frames(2, {"red square": [(1, 1)]})
    with pytest.raises(ValueError, match="frame 1 is 50x40 but the video's frames are 96x64"):
        list(Tracker(pipe).track([good[0], np.zeros((40, 50, 3), np.uint8)], "red square"))
    with pytest.raises(ValueError, match="RGB uint8"):
        list(Tracker(pipe).track([np.zeros((4, 4), np.uint8)], "red square"))
    with pytest.raises(TypeError, match="VideoFrame or an RGB uint8 array"):
        list(Tracker(pipe).track(["frame.png"], "red square"))
    with pytest.raises(ValueError, match="detect_every"):
        Tracker(pipe, detect_every=0)
    with pytest.raises(ValueError, match="new_track_iou"):
        Tracker(pipe, new_track_iou=0)
    with pytest.raises(ValueError, match="give video_segmenter"):
        Tracker(Pipeline(detector=ColourDetector()))
    with pytest.raises(ValueError, match="needs a pipeline with a detector"):
        Tracker(Pipeline(segmenter=ColourSegmenter()))


class _TwiceDetector(ColourDetector):
    """Also reports a second, much larger box around the red square on the first keyframe."""

    def detect(self, images, prompts):
        [det] = super().detect(images, prompts)
        if self.calls == 1:
            x1, y1, x2, y2 = det.xyxy[0]
            extra = sv.Detections(xyxy=np.array([[x1 - 20, y1 - 8, x2 + 4, y2 + 8]], np.float32),
                                  confidence=np.array([0.8], np.float32), class_id=np.array([0]))
            extra.data["prompt"] = np.array(["red square"], dtype=object)
            det = sv.Detections.merge([det, extra])
        return [det]


def test_two_tracks_on_one_object_become_one():
    video = frames(10, {"red square": _moving(10, (30, 10), (1, 0))})
    pipe = Pipeline(detector=_TwiceDetector(), segmenter=ColourSegmenter(), nms="none")
    tracker = Tracker(pipe, detect_every=5)
    results = list(tracker.track(video, "red square"))
    # the second box starts track 2, whose mask is the same square: it ends at once
    assert [list(_ids(r)) for r in results] == [[1]] * 10
    assert list(tracker.video_segmenter._boxes) == []


class _ShrinkingSegmenter(ColourSegmenter):
    """A segmenter whose masks shrink: each keeps only the middle 80% of its prompt box."""

    def segment(self, images, detections):
        out = super().segment(images, detections)
        for det, result in zip(detections, out):
            for row, (x1, y1, x2, y2) in enumerate(det.xyxy):
                keep = np.zeros_like(result.mask[row])
                dx, dy = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
                keep[int(round(y1 + dy)):int(round(y2 - dy)), int(round(x1 + dx)):int(round(x2 - dx))] = True
                result.mask[row] &= keep
        return out


@pytest.mark.parametrize("nested_share, ids", [(0.8, [[1]] * 8),
                                                (None, [[1]] * 3 + [[1, 2]] * 3 + [[1, 2, 3]] * 2)])
def test_a_track_that_shrank_inside_its_object_is_re_anchored_not_doubled(nested_share, ids):
    video = frames(8, {"red square": [(20, 10)] * 8}, side=20)
    pipe = Pipeline(detector=ColourDetector(), segmenter=_ShrinkingSegmenter())
    tracker = Tracker(pipe, detect_every=3, nested_share=nested_share)
    results = list(tracker.track(video, "red square"))
    assert [list(_ids(r)) for r in results] == ids
    if nested_share is not None:  # re-anchored on keyframes: back to the (80%) whole square
        assert [r.detections.xyxy[0].tolist() for r in results[2:4]] == [[25, 15, 35, 25], [22, 12, 38, 28]]
