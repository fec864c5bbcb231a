"""Images of any size and aspect ratio: every stage runs, or one image is skipped with a reason.

The shapes-tiny preset is the whole real chain (CLIP tagger, Grounding DINO with a 224-pixel
processor, SAM, CLIP classifier), small enough to run every shape in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from ovperc import ImageError, Ontology, Pipeline
from ovperc.cli import main
from ovperc.image import UnsupportedImageError
from ovperc.labeling import label_folder
from ovperc.stages.clip_classifier import square_crop
from ovperc.stages.grounding_dino_size import processed_size
from ovperc.stages.sam import input_shape
from tests.fakes import FakeDetector

#: (height, width): square, tiny, one-pixel strips, the tester's 10000x10 and 10x10000.
SHAPES = [(1, 1), (2, 1), (7, 9), (1, 5000), (5000, 1), (10, 10000), (10000, 10)]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def chain() -> Pipeline:
    return Pipeline.from_preset("shapes-tiny", device="cpu", keep_images=False,
                                options={"detector": {"box_threshold": 0.0, "text_threshold": 0.0}})


@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_every_stage_runs_on_any_aspect_ratio(chain: Pipeline, height: int, width: int) -> None:
    result = chain(_image(height, width), classes="red circle, blue square")
    det = result.detections
    assert result.image_size == (width, height)
    if min(height, width) > 1 and max(height, width) < 5000:
        assert len(det) > 0, "thresholds of 0 keep every query: the detector really ran"
    assert det.mask is not None and det.mask.shape == (len(det), height, width)
    assert "clip_class" in det.data, "the classifier ran"
    assert set(result.timings) == {"tag", "detect", "segment", "classify"}
    assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= width).all()
    assert (det.xyxy[:, [1, 3]] >= 0).all() and (det.xyxy[:, [1, 3]] <= height).all()


def test_tagger_names_thin_images_too(chain: Pipeline) -> None:
    results = chain.run_batch([_image(1, 30000), _image(30000, 1)])
    assert [r.image_size for r in results] == [(30000, 1), (1, 30000)]
    assert all(r.ontology is not None for r in results)


def test_thin_and_normal_images_in_one_batch_equal_one_by_one(chain: Pipeline) -> None:
    images = [_image(10, 10000, 1), _image(48, 64, 2)]
    prompts = [["red circle", "blue square"]] * 2
    together = chain.detector.detect(images, prompts)
    boxes = [det[:3] for det in together]
    masks = chain.segmenter.segment(images, boxes)
    for i, image in enumerate(images):
        [alone] = chain.detector.detect([image], prompts[:1])
        np.testing.assert_allclose(together[i].xyxy, alone.xyxy, atol=1e-3)
        [mask_alone] = chain.segmenter.segment([image], [boxes[i]])
        np.testing.assert_array_equal(masks[i].mask, mask_alone.mask)


@pytest.mark.parametrize(("height", "width"), [(480, 640), (640, 480), (800, 1333), (1, 1), (7, 9),
                                               (600, 600), (333, 5000)])
def test_detector_size_matches_the_processor_where_it_works(chain: Pipeline, height: int,
                                                           width: int) -> None:
    """The resize computed to avoid 0-pixel sides is the processor's own everywhere else."""
    processor = chain.detector.load()._processor.image_processor
    for size in ({"shortest_edge": 800, "longest_edge": 1333}, {"shortest_edge": 224, "longest_edge": 224},
                 {"max_height": 300, "max_width": 500}):
        pixels = processor(images=[_image(height, width)], size=size, return_tensors="pt",
                           input_data_format="channels_last")["pixel_values"]
        assert processed_size(height, width, size) == tuple(pixels.shape[-2:]), size


@pytest.mark.parametrize(("height", "width", "expected"), [
    (10, 10000, (1, 224)), (10000, 10, (224, 1)), (1, 1, (224, 224)), (1, 99999, (1, 224))])
def test_detector_size_never_has_a_zero_side(height: int, width: int, expected: tuple) -> None:
    assert processed_size(height, width, {"shortest_edge": 224, "longest_edge": 224}) == expected


def test_strips_are_padded_to_the_minimum_side_and_boxes_come_back_in_image_pixels(chain: Pipeline) -> None:
    """A 10x10000 strip is shown as 64x224 (224-pixel processor); a box is mapped back."""
    import torch

    from ovperc.stages.grounding_dino_size import MIN_SIDE, pad_strip

    detector = chain.detector.load()
    pixels, frame = detector._pixels(0, _image(10, 10000))
    assert tuple(pixels.shape[-2:]) == (MIN_SIDE, 224) and frame == (640.0, 10000.0)
    probs = torch.zeros(3, 6)
    probs[:, 1] = 0.9
    # normalised (cx, cy, w, h) in the frame: inside the strip, half in the fill, all in the fill
    boxes = torch.tensor([[0.5, 0.005, 0.2, 0.01], [0.25, 0.01, 0.1, 0.02], [0.5, 0.5, 0.2, 0.2]])
    found = detector._assign(probs, boxes, [(1, 2)], (0,), 10000, 10, frame)
    np.testing.assert_allclose(found.xyxy, [[4000, 0, 6000, 6.4], [2000, 0, 3000, 10]], atol=1e-3)
    strip, shown = pad_strip(_image(3000, 2), (224, 1), [0.5, 0.5, 0.5])
    assert strip.shape == (224, MIN_SIDE, 3) and (strip[:, 1:] == 128).all() and shown == (3000.0, 128.0)


def test_sam_input_shape_matches_segment_anything_and_never_rounds_to_zero() -> None:
    from segment_anything.utils.transforms import ResizeLongestSide

    for height, width in [(480, 640), (1, 1), (1023, 7), (5, 3)]:
        assert input_shape(height, width, 1024) == ResizeLongestSide.get_preprocess_shape(
            height, width, 1024)
    assert input_shape(1, 3000, 1024) == (1, 1024)
    assert input_shape(100000, 1, 1024) == (1024, 1)


@pytest.mark.parametrize("box", [[5, 0, 5, 1], [0, 0, 0, 0], [0, 0, 100000, 1], [3, 3, 3, 3]])
def test_clip_crops_of_empty_or_endless_boxes_stay_small(box: list[float]) -> None:
    strip = _image(1, 100000)
    crop = square_crop(strip, np.array(box, dtype=float), 0.1, (0, 0, 0), max_side=1024)
    assert crop.shape[0] == crop.shape[1] and 1 <= crop.shape[0] <= 1024


def test_label_cli_labels_thin_images_before_good_ones(tmp_path: Path) -> None:
    """The tester's run: three thin images sorted first no longer end the run."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name, (height, width) in {"a.png": (10, 10000), "b.png": (10000, 10), "c.png": (1, 1),
                                  "z.png": (48, 64)}.items():
        Image.fromarray(_image(height, width)).save(src / name)
    code = main(["label", str(src), "--out", str(out), "--classes", "red circle",
                 "--preset", "shapes-tiny", "--device", "cpu", "--no-progress", "--masks",
                 "--format", "coco"])
    assert code == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(Path(i["file_name"]).name for i in coco["images"]) == ["a.png", "b.png", "c.png", "z.png"]


class ThinRefusingDetector(FakeDetector):
    """A detector that, like a model with a minimum input size, cannot take thin images."""

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[sv.Detections]:
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            if min(height, width) < 4:
                raise UnsupportedImageError(f"images[{index}]", f"image too thin for the detector: "
                                            f"{width}x{height}", index=index, stage="detector")
        return super().detect(images, prompts)


@pytest.fixture
def refusing() -> Pipeline:
    return Pipeline(detector=ThinRefusingDetector({"cat": [(1, 1, 3, 3, 0.9)]}))


def test_run_batch_keeps_the_other_images_when_one_cannot_run(refusing: Pipeline) -> None:
    images = [_image(32, 32), _image(2, 900), _image(16, 16), _image(900, 1)]
    results = refusing.run_batch(images, classes=Ontology(["cat"]), errors="return",
                                 sources=["a.png", "strip.png", "c.png", None])
    assert [type(r).__name__ for r in results] == [
        "Perception", "UnsupportedImageError", "Perception", "UnsupportedImageError"]
    assert results[1].source == "strip.png" and results[1].index == 1
    assert str(results[1]) == "strip.png: image too thin for the detector: 900x2"
    assert "image 3 of the batch (1x900)" in str(results[3])
    assert [len(results[i].detections) for i in (0, 2)] == [1, 1]
    assert results[2].source == "c.png"


def test_run_batch_raises_a_named_image_error_by_default(refusing: Pipeline) -> None:
    with pytest.raises(ImageError, match=r"strip\.png: image too thin for the detector: 900x2"):
        refusing.run_batch([_image(32, 32), _image(2, 900)], classes=Ontology(["cat"]),
                           sources=["a.png", "strip.png"])
    with pytest.raises(UnsupportedImageError, match="too thin"):
        refusing(_image(1, 50), classes="cat")
    with pytest.raises(ValueError, match="errors must be one of"):
        refusing.run_batch([_image(8, 8)], classes=Ontology(["cat"]), errors="ignore")


def test_map_skips_images_a_stage_cannot_take(refusing: Pipeline, caplog) -> None:
    images = [_image(32, 32), _image(1, 100), _image(16, 16)]
    results = list(refusing.map(images, classes="cat", batch_size=3, skip_errors=True))
    assert [r.image_size for r in results] == [(32, 32), (16, 16)]
    assert "too thin for the detector: 100x1" in caplog.text
    with pytest.raises(UnsupportedImageError):
        list(refusing.map(images, classes="cat", batch_size=3))


def test_label_folder_skips_only_the_image_that_cannot_run(refusing: Pipeline, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, shape in {"a.png": (2, 500), "b.png": (500, 2), "c.png": (1, 1), "d.png": (32, 32)}.items():
        Image.fromarray(_image(*shape)).save(src / name)
    report = label_folder(refusing, src, tmp_path / "out", classes="cat", batch_size=2,
                          progress=False, durable=False)
    assert report.images_done == 1
    assert sorted(Path(item["path"]).name for item in report.skipped) == ["a.png", "b.png", "c.png"]
    assert all("too thin for the detector" in item["reason"] for item in report.skipped)


def test_clip_trims_endless_strips_to_what_its_centre_crop_keeps() -> None:
    """Trimming first gives the pixels the full transform gives, without the huge resize."""
    import open_clip

    from ovperc.stages.clip_pixels import trim_to_center

    transform = open_clip.image_transform(224, is_train=False)
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(_image(6, 90)).resize((1800, 120), Image.Resampling.BICUBIC))
    for array in (smooth, smooth.transpose(1, 0, 2).copy()):
        image = Image.fromarray(array)
        trimmed = trim_to_center(image, transform)
        assert max(trimmed.size) == 4 * min(trimmed.size)
        difference = (transform(trimmed) - transform(image)).abs().mean()
        assert float(difference) < 1e-4, float(difference)  # measured: 0.0
    square = Image.fromarray(rng.integers(0, 256, (50, 120, 3), dtype=np.uint8))
    assert trim_to_center(square, transform) is square, "images up to 4:1 are left alone"
    strip = Image.fromarray(_image(1, 30000))
    assert trim_to_center(strip, transform).size == (4, 1)
