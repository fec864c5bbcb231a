"""Thresholds tuned on hand labels keep or improve F1 on other, held-out scenes.

The shapes world gives exact ground truth, standing in for hand labels: scenes of one
seed are the validation set ``ovperc tune`` learns thresholds on, scenes of another seed
are held out and only scored. The chain is ``shapes-tiny``'s detector (run with a low box
threshold, so there is something to tune) and CLIP classifier, without SAM to stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ovperc import Pipeline, read_thresholds
from ovperc.cli import main
from ovperc.datasets.scoring import score_detections
from ovperc.shapes import CLASSES, Scene, generate_scenes

#: validation scenes (thresholds are tuned on them) and held-out scenes (only scored).
TUNE_SEED, HELD_SEED, SCENES = 11, 12, 20
#: the box threshold the shipped preset labels with (``shapes-tiny`` options).
PRESET_BOX_THRESHOLD = 0.3


def _f1(scores) -> float:
    p, r = scores.precision, scores.recall
    return 2 * p * r / (p + r) if p + r else 0.0


def _write_predictions(pipe: Pipeline, scenes: list[Scene], root: Path) -> list:
    """Label the scenes through the API and write them as COCO (scores kept), with the truth."""
    from ovperc.labeling.writers import ImageItem, make_writer
    from ovperc.shapes.export import write_ground_truth, write_images

    paths = write_images(scenes, root / "png")
    write_ground_truth(scenes, paths, root / "hand", format="coco", masks=False)
    writer = make_writer("coco", root / "auto", durable=False)
    results = list(pipe.map(paths, classes=list(CLASSES), batch_size=8))
    for path, scene, result in zip(paths, scenes, results):
        height, width = scene.image.shape[:2]
        writer.write(ImageItem(path, path.stem, path.suffix, width, height), result.detections,
                     list(CLASSES))
    writer.finalize(list(CLASSES), [p.stem for p in paths])
    return results


@pytest.mark.slow
def test_tuned_thresholds_keep_or_improve_heldout_f1(shapes_pipeline, tmp_path: Path, capsys) -> None:
    from ovperc.stages.grounding_dino import GroundingDinoDetector

    detector = GroundingDinoDetector(shapes_pipeline.detector.model_name, device="cpu",
                                     box_threshold=0.05, text_threshold=0.25)
    pipe = Pipeline(detector=detector, classifier=shapes_pipeline.classifier)

    # 1. label the validation scenes and tune on their hand labels (the command line)
    _write_predictions(pipe, generate_scenes(SCENES, seed=TUNE_SEED), tmp_path / "val")
    out = tmp_path / "thresholds.yaml"
    assert main(["tune", str(tmp_path / "val" / "auto"), str(tmp_path / "val" / "hand"),
                 "--out", str(out), "--min-support", "5"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in CLASSES)
    thresholds = read_thresholds(out)
    assert thresholds.default is not None and thresholds.classes  # some classes got their own

    # 2. held-out scenes, labelled once with the low box threshold
    held = generate_scenes(SCENES, seed=HELD_SEED)
    truth = [s.detections() for s in held]
    raw = [r.detections for r in _write_predictions(pipe, held, tmp_path / "held")]

    def held_f1(dets: list) -> float:
        return _f1(score_detections(dets, truth, list(CLASSES)))

    def globally(t: float) -> list:
        return [d[np.asarray(d.confidence) >= t] for d in raw]

    tuned = [thresholds.filter(d) for d in raw]
    untuned_f1, preset_f1, tuned_f1 = held_f1(raw), held_f1(globally(PRESET_BOX_THRESHOLD)), held_f1(tuned)
    print(f"held-out F1: untuned {untuned_f1:.3f}, preset {preset_f1:.3f}, tuned {tuned_f1:.3f}")
    # reached: untuned 0.870, the preset's global 0.3 0.879, tuned per class 0.889
    assert tuned_f1 >= untuned_f1
    assert tuned_f1 >= preset_f1

    # 3. relabelling with the thresholds gives those boxes (checked on a few scenes)
    relabel = Pipeline(detector=detector, classifier=shapes_pipeline.classifier,
                       class_thresholds=thresholds)
    few = 5
    again = list(relabel.map([s.image for s in held[:few]], classes=list(CLASSES), batch_size=few))
    for result, expected in zip(again, tuned[:few]):
        assert result.detections.data["class_name"].tolist() == expected.data["class_name"].tolist()
        np.testing.assert_allclose(result.detections.xyxy, expected.xyxy, atol=1e-3)
