"""``Perception``: what the chain found in one image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.types import Tag

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.ontology import Ontology


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@dataclass
class Perception:
    """The result for one image.

    Attributes:
        detections: ``supervision.Detections`` with ``xyxy`` (pixels), ``confidence``,
            ``class_id`` (ids of :attr:`ontology`), ``mask`` when segmented, and
            ``data["class_name"]`` plus any per-box fields a stage added.
        tags: image tags, best first (empty when no tagger ran).
        image_size: ``(width, height)`` of the image in pixels.
        timings: seconds spent per stage for this image (a batch's time split evenly).
        ontology: the classes the ids refer to.
        source: where the image came from, when known.
        image: the decoded RGB image, kept for :meth:`annotate` (``None`` to save memory).

    Example:
        >>> result = pipeline("street.jpg", classes=["person"])  # doctest: +SKIP
        >>> result.to_dict()["detections"][0]["class_name"]  # doctest: +SKIP
        'person'
    """

    detections: sv.Detections
    tags: list[Tag]
    image_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)
    ontology: Ontology | None = None
    source: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def class_names(self) -> list[str]:
        """Class name of every detection, in order."""
        names = self.detections.data.get("class_name")
        return [] if names is None else [str(n) for n in names]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; masks are COCO RLE (``{"size": [h, w], "counts": str}``).

        Example:
            >>> json.dumps(result.to_dict())  # doctest: +SKIP
        """
        from ovperc.masks import mask_to_coco_rle

        det = self.detections
        width, height = self.image_size
        boxes = []
        for i in range(len(det)):
            box: dict[str, Any] = {
                "box": [round(float(v), 2) for v in det.xyxy[i]],
                "confidence": None if det.confidence is None else float(det.confidence[i]),
                "class_id": None if det.class_id is None else int(det.class_id[i]),
            }
            for key, values in det.data.items():
                box[key] = _jsonable(values[i])
            if det.mask is not None:
                box["mask"] = mask_to_coco_rle(det.mask[i])
            boxes.append(box)
        return {
            "source": self.source,
            "image_size": {"width": width, "height": height},
            "classes": None if self.ontology is None else self.ontology.classes,
            "tags": [{"name": t.name, "score": round(float(t.score), 4)} for t in self.tags],
            "detections": boxes,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def annotate(self, image: np.ndarray | None = None) -> np.ndarray:
        """Draw masks, boxes and labels on the image with supervision's annotators.

        Args:
            image: the RGB image to draw on; defaults to the image this result came from.

        Returns:
            A new RGB ``uint8`` array.

        Example:
            >>> PIL.Image.fromarray(result.annotate()).save("annotated.jpg")  # doctest: +SKIP
        """
        import supervision as sv

        if image is None:
            image = self.image
        if image is None:
            raise ValueError("this result holds no image; pass the image to annotate()")
        canvas = image.copy()
        det = self.detections
        if len(det) == 0:
            return canvas
        if det.class_id is None:
            det = det[:]
            det.class_id = np.zeros(len(det), dtype=int)
        labels = []
        for i in range(len(det)):
            name = self.class_names[i] if self.class_names else str(det.class_id[i])
            score = "" if det.confidence is None else f" {det.confidence[i]:.2f}"
            labels.append(f"{name}{score}")
        scale = sv.calculate_optimal_text_scale(resolution_wh=self.image_size)
        thickness = sv.calculate_optimal_line_thickness(resolution_wh=self.image_size)
        if det.mask is not None:
            canvas = sv.MaskAnnotator(opacity=0.45).annotate(canvas, det)
        canvas = sv.BoxAnnotator(thickness=thickness).annotate(canvas, det)
        canvas = sv.LabelAnnotator(text_scale=scale, text_thickness=max(1, thickness // 2)).annotate(
            canvas, det, labels=labels
        )
        return canvas
