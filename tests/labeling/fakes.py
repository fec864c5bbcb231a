"""Small deterministic stages for testing the labelling logic without models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from ovperc.types import Tag


class FakeDetector:
    """One box per prompt; where it lies depends only on the image size and the prompt."""

    def __init__(self, fail_on_width: int | None = None) -> None:
        self.calls = 0
        self.fail_on_width = fail_on_width

    def detect(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[sv.Detections]:
        self.calls += 1
        out = []
        for image, image_prompts in zip(images, prompts):
            h, w = image.shape[:2]
            if self.fail_on_width is not None and w == self.fail_on_width:
                raise RuntimeError(f"cannot handle width {w}")
            boxes, ids, scores = [], [], []
            for j, _ in enumerate(image_prompts):
                x0, y0 = (j * 7) % max(w // 2, 1), (j * 5) % max(h // 2, 1)
                boxes.append([x0, y0, min(w, x0 + w / 2 + 0.25), min(h, y0 + h / 2 + 0.5)])
                ids.append(j)
                scores.append(0.9 - 0.05 * j)
            det = sv.Detections(
                xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                confidence=np.array(scores, dtype=np.float32),
                class_id=np.array(ids, dtype=int),
            )
            det.data["prompt"] = np.array(list(image_prompts), dtype=object)
            out.append(det)
        return out


class FakeSegmenter:
    """An ellipse inside every box."""

    def segment(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections]
    ) -> list[sv.Detections]:
        out = []
        for image, det in zip(images, detections):
            h, w = image.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            masks = np.zeros((len(det), h, w), dtype=bool)
            for i, (x0, y0, x1, y1) in enumerate(det.xyxy):
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                rx, ry = max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1)
                masks[i] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            det = det[:] if len(det) else det
            det.mask = masks
            out.append(det)
        return out


class FakeTagger:
    """Tags from the image's dominant colour and its orientation."""

    def tag(self, images: Sequence[np.ndarray]) -> list[list[Tag]]:
        out = []
        for image in images:
            means = image.reshape(-1, 3).mean(0)
            colour = ("red thing", "green thing", "blue thing")[int(np.argmax(means))]
            shape = "wide" if image.shape[1] > image.shape[0] else "tall"
            out.append([Tag(colour, 0.9), Tag(shape, 0.6)])
        return out
