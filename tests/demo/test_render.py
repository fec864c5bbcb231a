"""The result image: colours that follow the class name, labels inside the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

import ovperc
from ovperc.demo.core import DemoRunner, RunOptions
from ovperc.demo.render import annotate, color_index

FOUR = ("red circle", "blue square", "green triangle", "yellow star")


def _edge_color(image: np.ndarray, box: np.ndarray) -> tuple[int, ...]:
    """The colour of a box's left edge, half-way down (where only the box line is drawn)."""
    x1, y1, _, y2 = box.astype(int)
    return tuple(int(v) for v in image[(y1 + y2) // 2, x1])


def test_a_class_keeps_its_colour_whatever_else_is_asked(pipeline: ovperc.Pipeline,
                                                         tmp_path: Path, shapes_path: Path):
    runner = DemoRunner(pipeline, workdir=tmp_path)
    colours: dict[str, set[tuple[int, ...]]] = {}
    for classes in ("red square, blue circle", "blue circle, red square, yellow triangle",
                    "yellow triangle, blue circle"):
        perception = runner.run(shapes_path, RunOptions(classes=classes, segment=False)).perception
        image = annotate(perception)
        for name, box in zip(perception.class_names, perception.detections.xyxy):
            colours.setdefault(name, set()).add(_edge_color(image, box))
    # class ids differ between these runs (blue circle is 1, then 0); colours do not
    assert {name: len(seen) for name, seen in colours.items()} == {
        "red square": 1, "blue circle": 1, "yellow triangle": 1}
    assert len({next(iter(seen)) for seen in colours.values()}) == 3


def test_colour_index_is_stable_and_reserved_classes_differ():
    assert color_index("Blue  Circle", 21) == color_index("blue circle", 21)
    # a fixed value: a per-process hash (Python's hash()) would not give it in every run
    assert color_index("person", 21) == 11
    assert len({color_index(name, 21, FOUR) for name in FOUR}) == 4
    assert [color_index(name, 21, FOUR) for name in FOUR] == [0, 1, 2, 3]


@pytest.mark.parametrize("box", [
    [250, 0, 320, 40],     # top-right corner: a label above the box would be cut off
    [0, 0, 60, 60],        # top-left corner
    [200, 200, 320, 240],  # bottom-right corner
])
def test_labels_stay_inside_the_image(box: list[int]):
    import cv2

    canvas = np.full((240, 320, 3), 255, dtype=np.uint8)
    det = sv.Detections(xyxy=np.array([box], dtype=np.float32),
                        confidence=np.array([0.87], dtype=np.float32), class_id=np.array([0]),
                        data={"class_name": np.array(["green triangle"], dtype=object)})
    perception = ovperc.Perception(detections=det, tags=[], image_size=(320, 240), image=canvas)
    drawn = annotate(perception)
    boxed = sv.BoxAnnotator(thickness=sv.calculate_optimal_line_thickness((320, 240))).annotate(
        canvas.copy(), det)
    label = np.any(drawn != boxed, axis=2) & np.all(boxed == 255, axis=2)
    ys, xs = np.nonzero(label)
    scale = sv.calculate_optimal_text_scale((320, 240))
    thickness = max(1, sv.calculate_optimal_line_thickness((320, 240)) // 2)
    (text_w, text_h), _ = cv2.getTextSize("green triangle 0.87", cv2.FONT_HERSHEY_SIMPLEX, scale,
                                          thickness)
    # the whole label background (text plus 10 px padding each side) is in the picture
    assert xs.max() - xs.min() + 1 >= text_w + 2 * 10 - 1
    assert ys.max() - ys.min() + 1 >= text_h + 2 * 10 - 1
