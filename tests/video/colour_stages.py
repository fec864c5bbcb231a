"""Detector and segmenter stages that see flat-coloured squares on a black background.

They let the tracker's logic be tested on synthetic videos with real motion: the detector
finds every connected blob of a prompt's colour, the segmenter answers the non-black
pixels inside each box. ``frames`` draws the videos.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

#: prompt -> RGB colour of its squares.
COLOURS = {"red square": (255, 0, 0), "blue square": (0, 0, 255), "green square": (0, 255, 0)}


class ColourDetector:
    """Boxes of every connected blob of each prompt's colour; counts its calls."""

    def __init__(self, rename: dict[int, str] | None = None) -> None:
        self.calls = 0
        self.rename = rename or {}  # call number -> prompt every box is labelled with

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[sv.Detections]:
        from scipy import ndimage

        out = []
        for image, image_prompts in zip(images, prompts):
            xyxy, ids = [], []
            for index, prompt in enumerate(image_prompts):
                hit = np.all(image == np.array(COLOURS[prompt], np.uint8), axis=2)
                labels, _ = ndimage.label(hit)
                for rows, cols in ndimage.find_objects(labels):
                    xyxy.append((cols.start, rows.start, cols.stop, rows.stop))
                    ids.append(index)
            if self.calls in self.rename:
                ids = [list(image_prompts).index(self.rename[self.calls])] * len(ids)
            self.calls += 1
            det = sv.Detections(xyxy=np.array(xyxy, np.float32).reshape(-1, 4),
                                confidence=np.full(len(ids), 0.9, np.float32),
                                class_id=np.array(ids, dtype=int))
            det.data["prompt"] = np.array([image_prompts[i] for i in ids], dtype=object)
            out.append(det)
        return out


class ColourSegmenter:
    """Like SAM on these frames: the whole blob (non-black connected pixels) of the colour
    that fills most of each box, reaching past the box; counts the images it embeds."""

    def __init__(self) -> None:
        self.images = 0

    def segment(self, images: Sequence[np.ndarray],
                detections: Sequence[sv.Detections]) -> list[sv.Detections]:
        from scipy import ndimage

        out = []
        for image, det in zip(images, detections):
            self.images += 1
            height, width = image.shape[:2]
            masks = np.zeros((len(det), height, width), dtype=bool)
            labels, _ = ndimage.label(image.any(axis=2))
            for row, (x1, y1, x2, y2) in enumerate(np.round(det.xyxy).astype(int)):
                inside = labels[max(y1, 0):y2, max(x1, 0):x2]
                found = np.bincount(inside[inside > 0].ravel())
                if found.size:
                    masks[row] = labels == found.argmax()
            det = det[:] if len(det) else sv.Detections(xyxy=np.zeros((0, 4), np.float32))
            det.mask = masks
            det.data["mask_score"] = np.ones(len(det), np.float32)
            out.append(det)
        return out


def frames(n: int, squares: dict[str, list[tuple[int, int] | None]], size: tuple[int, int] = (96, 64),
           side: int = 12) -> list[np.ndarray]:
    """``n`` frames of ``size`` (width, height); ``squares[prompt][i]`` is the top-left corner of
    that prompt's square on frame ``i`` (``None`` or past the list: not there)."""
    width, height = size
    video = []
    for i in range(n):
        image = np.zeros((height, width, 3), np.uint8)
        for prompt, path in squares.items():
            corner = path[i] if i < len(path) else None
            if corner is not None:
                x, y = corner
                image[max(y, 0):y + side, max(x, 0):x + side] = COLOURS[prompt]
        video.append(image)
    return video
