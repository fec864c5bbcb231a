"""The fast path's int8 transformation on the trained ``shapes-tiny`` chain: what it costs.

Every stage of the chain with ``quantize="int8"`` (the ``fast`` preset runs its CLIP and its
detector that way) against the exact chain on the same held-out scenes: box mAP@0.5 within
0.02, and the same boxes and masks (box IoU >= 0.5 matches, mask IoU of the matched pairs).
"""

from __future__ import annotations

import numpy as np
import pytest

from ovperc.shapes import CLASSES

ROLES = ("tagger", "detector", "segmenter", "classifier")


@pytest.fixture(scope="module")
def fast_pipeline(tmp_path_factory: pytest.TempPathFactory):
    from ovperc import Pipeline

    options = {role: {"quantize": "int8"} for role in ROLES}
    options["tagger"]["cache_dir"] = str(tmp_path_factory.mktemp("shapes-tags-int8"))
    return Pipeline.from_preset("shapes-tiny", device="cpu", options=options)


@pytest.fixture(scope="module")
def fast_perceptions(fast_pipeline, heldout_files) -> list:
    return list(fast_pipeline.map(heldout_files.paths, classes=list(CLASSES), batch_size=8))


def _quantized(module) -> int:
    return sum(1 for m in module.modules()
               if type(m).__module__.startswith("torch.ao.nn.quantized") and hasattr(m, "weight"))


def test_every_stage_runs_int8(fast_pipeline, fast_perceptions) -> None:
    assert _quantized(fast_pipeline.detector._model) > 0
    assert _quantized(fast_pipeline.segmenter.sam.image_encoder) > 0
    assert fast_pipeline.tagger.clip is fast_pipeline.classifier.clip
    assert _quantized(fast_pipeline.classifier.clip.model.visual) > 0


def test_int8_keeps_map50_within_002(perceptions, fast_perceptions, heldout) -> None:
    from ovperc.datasets.scoring import score_detections

    truth = [s.detections() for s in heldout]
    exact = score_detections([p.detections for p in perceptions], truth, list(CLASSES))
    fast = score_detections([p.detections for p in fast_perceptions], truth, list(CLASSES))
    assert fast.map50 >= exact.map50 - 0.02, (exact.map50, fast.map50)


def test_int8_finds_the_same_boxes_and_masks(perceptions, fast_perceptions) -> None:
    from tests.shapes.test_shapes_tiny import _box_iou

    matched = total = 0
    mask_ious = []
    for exact, fast in zip(perceptions, fast_perceptions):
        a, b = exact.detections, fast.detections
        total += len(a)
        if len(a) == 0 or len(b) == 0:
            continue
        iou = np.where(a.class_id[:, None] == b.class_id[None], _box_iou(a.xyxy, b.xyxy), 0.0)
        for i in range(len(a)):
            j = int(iou[i].argmax())
            if iou[i, j] >= 0.5:
                matched += 1
                union = np.logical_or(a.mask[i], b.mask[j]).sum()
                mask_ious.append(np.logical_and(a.mask[i], b.mask[j]).sum() / max(union, 1))
    assert total > 30
    assert matched / total >= 0.95, (matched, total)
    assert np.mean(mask_ious) >= 0.95, np.mean(mask_ious)
