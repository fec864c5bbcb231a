"""Small deterministic stages for testing chain logic without models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from ovperc.types import Tag


class FakeDetector:
    """Returns fixed boxes for known prompts: ``{prompt: [(x1, y1, x2, y2, score), ...]}``."""

    def __init__(self, boxes: dict[str, list[tuple[float, float, float, float, float]]]) -> None:
        self.boxes = boxes
        self.calls: list[list[list[str]]] = []

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[sv.Detections]:
        self.calls.append([list(p) for p in prompts])
        out = []
        for _image, image_prompts in zip(images, prompts):
            xyxy, conf, ids = [], [], []
            for index, prompt in enumerate(image_prompts):
                for x1, y1, x2, y2, score in self.boxes.get(prompt, []):
                    xyxy.append((x1, y1, x2, y2))
                    conf.append(score)
                    ids.append(index)
            det = sv.Detections(
                xyxy=np.array(xyxy, dtype=np.float32).reshape(-1, 4),
                confidence=np.array(conf, dtype=np.float32),
                class_id=np.array(ids, dtype=int),
            )
            det.data["prompt"] = np.array([image_prompts[i] for i in ids], dtype=object)
            det.data["class_name"] = det.data["prompt"].copy()
            out.append(det)
        return out


class FakeSegmenter:
    """Fills each box with a rectangular mask."""

    def __init__(self) -> None:
        self.calls = 0

    def segment(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections]
    ) -> list[sv.Detections]:
        self.calls += 1
        out = []
        for image, det in zip(images, detections):
            h, w = image.shape[:2]
            masks = np.zeros((len(det), h, w), dtype=bool)
            for i, (x1, y1, x2, y2) in enumerate(det.xyxy.astype(int)):
                masks[i, y1:y2, x1:x2] = True
            det = det[:] if len(det) else det
            det.mask = masks
            out.append(det)
        return out


class FakeTagger:
    """Returns the same tags for every image, or per-image tags from a list."""

    def __init__(self, tags: list[list[tuple[str, float]]] | list[tuple[str, float]]) -> None:
        self.tags = tags
        self.seen = 0

    def tag(self, images: Sequence[np.ndarray]) -> list[list[Tag]]:
        out = []
        for _ in images:
            if self.tags and isinstance(self.tags[0], list):
                out.append([Tag(*t) for t in self.tags[self.seen % len(self.tags)]])
            else:
                out.append([Tag(*t) for t in self.tags])
            self.seen += 1
        return out
