"""``Sam2VideoSegmenter``: tiny transformers video trackers load through the public path,
stream frames, and keep a bounded memory however long the video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ovperc import Pipeline, Tracker
from ovperc.video.sam2_video import Sam2VideoSegmenter
from ovperc.video.types import VideoFrame
from tests.video.colour_stages import ColourDetector, frames


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine two threads make tiny models ~50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_video_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SAM 2.1, EdgeTAM and SAM 3 tracker video folder each (built on first use)."""
    from tests.tiny.sam_video import build_tiny_sam_video

    class Folders(dict):
        def __missing__(self, kind: str) -> Path:
            self[kind] = build_tiny_sam_video(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))
            return self[kind]

    return Folders()


@pytest.fixture
def tiny_sam2_video(tiny_video_models: dict[str, Path]) -> Path:
    return tiny_video_models["sam2_video"]


KINDS = {"sam2_video": "Sam2VideoModel", "edgetam_video": "EdgeTamVideoModel",
         "sam3_tracker_video": "Sam3TrackerVideoModel"}


def _video(n: int) -> list[VideoFrame]:
    path = [(4 + 2 * i, 6 + i) for i in range(n)]
    return [VideoFrame(i, image) for i, image in enumerate(frames(n, {"red square": path}, size=(80, 60)))]


def _run(segmenter: Sam2VideoSegmenter, video: list[VideoFrame], prompts: dict[int, dict[int, list[float]]],
         remove: dict[int, list[int]] | None = None) -> list[dict[int, np.ndarray]]:
    """Each frame's mask logits and object scores per object id (random weights give mostly
    empty masks, so the raw outputs are what can show a difference)."""
    seen: list[dict[int, np.ndarray]] = []

    def record(module, args, kwargs, output):
        rows = np.concatenate([output.pred_masks.flatten(1).float().numpy(),
                               output.object_score_logits.reshape(-1, 1).float().numpy()], axis=1)
        seen.append(dict(zip(output.object_ids, rows)))

    hook = segmenter.model.register_forward_hook(record, with_kwargs=True)
    try:
        for frame in video:
            segmenter.propagate(frame, prompts.get(frame.index))
            if remove and frame.index in remove:
                segmenter.remove(remove[frame.index])
    finally:
        hook.remove()
    return seen


def _assert_same(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> None:
    for obj_id in b:
        np.testing.assert_array_equal(a[obj_id], b[obj_id])


@pytest.mark.parametrize("kind", KINDS)
def test_loads_from_its_folder_and_answers_a_mask_per_object(tiny_video_models, kind):
    segmenter = Sam2VideoSegmenter(tiny_video_models[kind], device="cpu")
    video = _video(4)
    assert segmenter.propagate(video[0]) == {}  # nothing followed yet
    masks = segmenter.propagate(video[1], {7: np.array([4, 6, 20, 20]), 3: np.array([40, 30, 70, 55])})
    assert segmenter.architecture == kind
    assert type(segmenter.model).__name__ == KINDS[kind]
    assert set(masks) == {3, 7}
    assert all(m.shape == (60, 80) and m.dtype == bool for m in masks.values())
    assert set(segmenter.propagate(video[2])) == {3, 7}
    assert segmenter.window == 4  # max(num_maskmem 3, max_object_pointers_in_encoder 4) of the config


@pytest.mark.parametrize("kind", KINDS)
def test_memory_stays_bounded_and_pruning_changes_nothing_the_model_reads(tiny_video_models, kind,
                                                                          monkeypatch):
    tiny = tiny_video_models[kind]
    video = _video(10)
    prompts = {0: {1: [4, 6, 20, 20], 2: [40, 30, 70, 55]}, 4: {1: [12, 10, 28, 24]},
               7: {3: [50, 5, 70, 20]}}
    pruned = Sam2VideoSegmenter(tiny, device="cpu", max_cond_frames=8)
    held = []
    for frame in video:
        pruned.propagate(frame, prompts.get(frame.index))
        held.append(pruned.memory_frames())
    assert max(held) <= pruned.window + 2  # the window, plus objects' prompted frames
    assert held[-1] < len(video)
    assert not pruned._session.processed_frames  # no frame pixels are kept

    pruned.reset()
    kept = _run(pruned, video, prompts)
    short = _run(Sam2VideoSegmenter(tiny, device="cpu", window=2), video, prompts)
    monkeypatch.setattr(Sam2VideoSegmenter, "_prune", lambda self, session, position: None)
    everything = Sam2VideoSegmenter(tiny, device="cpu")
    full = _run(everything, video, prompts)
    assert everything.memory_frames() == len(video)  # what transformers alone keeps
    assert len(kept) == len(full) == len(video)
    for a, b in zip(kept, full):
        assert a.keys() == b.keys()
        _assert_same(a, b)
    # the comparison sees the memory: a window shorter than what the model reads changes it
    with pytest.raises(AssertionError):
        for a, b in zip(short, full):
            _assert_same(a, b)


def test_removed_objects_are_forgotten_and_the_others_keep_their_memory(tiny_sam2_video):
    video = _video(8)
    prompts = {0: {1: [4, 6, 20, 20], 2: [40, 30, 70, 55], 3: [50, 5, 70, 20]}}
    segmenter = Sam2VideoSegmenter(tiny_sam2_video, device="cpu")
    both = _run(segmenter, video, prompts)
    segmenter.reset()
    fewer = _run(segmenter, video, prompts, remove={3: [2, 99]})
    assert [set(m) for m in fewer] == [{1, 2, 3}] * 4 + [{1, 3}] * 4
    for a, b in zip(both, fewer):  # objects are tracked independently: removing one changes no other
        _assert_same(a, b)
    assert segmenter._session.obj_ids == [1, 3]


def test_the_tracker_takes_a_video_tracker_by_folder(tiny_sam2_video):
    pipe = Pipeline(detector=ColourDetector())
    tracker = Tracker(pipe, str(tiny_sam2_video), detect_every=3, device="cpu",
                      segmenter_options={"window": 2})
    assert isinstance(tracker.video_segmenter, Sam2VideoSegmenter)
    results = list(tracker.track(_video(7), "red square"))
    assert [r.keyframe for r in results] == [True, False, False, True, False, False, True]
    for result in results:
        dets = result.detections
        assert dets.mask.shape == (len(dets), 60, 80)
        assert all(m.any() for m in dets.mask)  # only objects seen on the frame are listed
        # random weights put masks anywhere, so a keyframe may start a second track; ids count up
        assert set(dets.tracker_id.tolist()) <= {1, 2, 3}
    assert results[0].detections.tracker_id.tolist() in ([1], [])
    assert tracker.video_segmenter.memory_frames() == 0  # the run's session is closed


def test_unknown_names_and_other_architectures_are_clear_errors(tmp_path):
    from tests.tiny.sam_hf import build_tiny_sam_hf

    assert Sam2VideoSegmenter("sam2.1-tiny").model_name == "facebook/sam2.1-hiera-tiny"
    assert Sam2VideoSegmenter("edgetam").model_name == "yonigozlan/EdgeTAM-hf"
    with pytest.raises(ValueError, match="unknown video tracker 'vit_b'; known: sam2.1-tiny"):
        Sam2VideoSegmenter("vit_b")
    folder = build_tiny_sam_hf("sam", tmp_path / "sam")
    with pytest.raises(ValueError, match="is a 'sam' model, not a video tracker"):
        Sam2VideoSegmenter(folder, device="cpu").load()
