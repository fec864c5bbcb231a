"""Deterministic stages that see colours: fast stand-ins for the demo's models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from ovperc.ontology import Ontology

COLORS = {
    "red": (214, 40, 40),
    "blue": (40, 70, 200),
    "yellow": (240, 200, 30),
    "green": (40, 150, 70),
}


def _color_of(text: str) -> str | None:
    return next((c for c in COLORS if c in text.lower()), None)


def _color_mask(image: np.ndarray, color: str) -> np.ndarray:
    return (np.abs(image.astype(int) - COLORS[color]).max(axis=2) < 30)


class ColorDetector:
    """A box around the pixels of the colour a prompt names (``"red square"`` -> red).

    Confidence falls with the prompt's position (0.9, 0.85, ...); ``text_score`` is 0.6
    for prompts that name a shape too, else 0.4. It exposes thresholds like Grounding DINO.
    """

    box_threshold = 0.3
    text_threshold = 0.25

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, images: Sequence[np.ndarray],
               prompts: Sequence[Sequence[str]]) -> list[sv.Detections]:
        self.calls += 1
        out = []
        for image, image_prompts in zip(images, prompts):
            xyxy, conf, ids, text = [], [], [], []
            for index, prompt in enumerate(image_prompts):
                color = _color_of(prompt)
                if color is None:
                    continue
                ys, xs = np.nonzero(_color_mask(image, color))
                if len(xs) == 0:
                    continue
                xyxy.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
                conf.append(max(0.31, 0.9 - 0.05 * index))
                ids.append(index)
                text.append(0.6 if " " in prompt.strip() else 0.4)
            names = np.array([image_prompts[i] for i in ids], dtype=object)
            out.append(sv.Detections(
                xyxy=np.array(xyxy, dtype=np.float32).reshape(-1, 4),
                confidence=np.array(conf, dtype=np.float32),
                class_id=np.array(ids, dtype=int),
                data={"prompt": names, "class_name": names.copy(),
                      "text_score": np.array(text, dtype=np.float32)},
            ))
        return out


class ColorClassifier:
    """CLIP stand-in that sees shapes: how much of a box its main colour fills.

    Full -> "square", about pi/4 -> "circle", less -> "triangle". A region's ``clip_class``
    is the first ontology class naming its shape (score 0.8), else the first class (0.1).
    """

    def __init__(self, mode: str = "rescore") -> None:
        self.mode = mode

    @staticmethod
    def shape(region: np.ndarray) -> str:
        fill = max(_color_mask(region, c).mean() for c in COLORS)
        return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"

    def classify(self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections],
                 ontologies: Sequence[Ontology]) -> list[sv.Detections]:
        out = []
        for image, det, onto in zip(images, detections, ontologies):
            det = det[:]
            best, scores = [], []
            for x1, y1, x2, y2 in det.xyxy.astype(int):
                shape = self.shape(image[y1:y2, x1:x2])
                match = next((c for c in onto.classes if shape in c), None)
                best.append(match or onto.classes[0])
                scores.append(0.8 if match else 0.1)
            det.data["clip_class"] = np.array(best, dtype=object)
            det.data["clip_score"] = np.array(scores, dtype=np.float32)
            if self.mode == "relabel":
                det.data["class_name"] = det.data["clip_class"].copy()
            elif self.mode == "rescore" and len(det):
                det.confidence = np.sqrt(det.confidence * det.data["clip_score"])
            elif self.mode == "reject":
                det = det[det.data["clip_score"] >= 0.5]
            out.append(det)
        return out
