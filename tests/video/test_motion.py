"""The moving shapes world: seeded clips whose ground truth is exact."""

from __future__ import annotations

import numpy as np
import pytest

from ovperc.shapes.motion import MIN_VISIBLE, generate_clip, write_clip_frames


@pytest.fixture(scope="module")
def clip():
    return generate_clip(seed=7, frames=30, size=(128, 96), radius=(10.0, 16.0))


def test_same_seed_same_clip_other_seed_other_clip(clip):
    again = generate_clip(seed=7, frames=30, size=(128, 96), radius=(10.0, 16.0))
    other = generate_clip(seed=8, frames=30, size=(128, 96), radius=(10.0, 16.0))
    assert np.array_equal(clip.frame(11).image, again.frame(11).image)
    assert not np.array_equal(clip.frame(11).image, other.frame(11).image)


def test_ground_truth_masks_and_boxes_are_exact(clip):
    for frame in clip:
        assert frame.image.shape == (96, 128, 3)
        assert len(set(frame.track_ids.tolist())) == len(frame.track_ids)
        union = np.zeros((96, 128), int)
        for box, mask in zip(frame.xyxy, frame.masks):
            ys, xs = np.nonzero(mask)
            assert mask.sum() >= MIN_VISIBLE
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            union += mask
        assert union.max() <= 1  # visible masks never overlap


def test_shapes_have_the_colour_of_their_class(clip):
    frame = clip.frame(5)
    for name, mask in zip(frame.class_names, frame.masks):
        red, green, blue = frame.image[mask].mean(axis=0)
        colour = name.split()[0]
        if colour == "red":
            assert red > green + 60 and red > blue + 60
        elif colour == "blue":
            assert blue > red + 60
        elif colour == "green":
            assert green > red + 40 and green > blue + 40


def test_a_shape_enters_mid_clip_and_one_leaves(clip):
    (entering,) = clip.entering()
    assert entering.first > 0
    seen = [f.index for f in clip if entering.track_id in f.track_ids]
    assert seen and seen[0] > entering.first - 1 and seen[-1] == len(clip) - 1
    assert all(entering.track_id not in f.track_ids for f in list(clip)[: entering.first])
    (leaving,) = clip.leaving()
    seen = [f.index for f in clip if leaving.track_id in f.track_ids]
    assert seen[0] == 0 and seen[-1] < len(clip) - 1
    # ids are given in order of first appearance
    firsts = {}
    for frame in clip:
        for track_id in frame.track_ids.tolist():
            firsts.setdefault(track_id, frame.index)
    assert sorted(firsts, key=lambda t: (firsts[t], t)) == sorted(firsts)


def test_crossing_shapes_occlude_each_other():
    clip = generate_clip(seed=2, frames=40, size=(160, 120), radius=(14.0, 20.0), enter=False, leave=False)
    back, front = clip.movers[0], clip.movers[1]
    areas = [int(f.masks[list(f.track_ids).index(back.track_id)].sum()) if back.track_id in f.track_ids
             else 0 for f in clip]
    assert min(areas) < 0.8 * max(areas)  # partly (or wholly) hidden while the other passes over
    assert front.radius <= back.radius


def test_ground_truth_tracks_are_frame_tracks(clip):
    tracks = list(clip.ground_truth())
    assert [t.index for t in tracks] == list(range(len(clip)))
    assert tracks[3].detections.tracker_id.tolist() == clip.frame(3).track_ids.tolist()
    assert tracks[3].timestamp == pytest.approx(3 / clip.fps)


def test_write_frames(tmp_path, clip):
    from ovperc.image import load_image

    paths = write_clip_frames(clip, tmp_path)
    assert len(paths) == len(clip)
    assert np.array_equal(load_image(paths[4]), clip.frame(4).image)


@pytest.mark.parametrize("options", [{"frames": 1}, {"size": (20, 20)}, {"objects": -1}])
def test_bad_options(options):
    with pytest.raises(ValueError):
        generate_clip(seed=0, **options)
