"""The worker side of the Ray engine: decoding tasks, the labelling actor, compact results.

Everything here runs inside Ray workers (and in tests, in-process): a row is one planned
batch of files (``{"index", "paths"}`` with ``os.fsencode``-ed paths); what comes back is
``{"index", "decode_s", "outcomes"}`` where ``outcomes`` holds, per file, a
:class:`CompactResult` or a :class:`Failure` (pickled, so any file name and any array shape
travel as they are).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.image import ImageError
from ovperc.labeling.engine import is_fatal, load_models
from ovperc.labeling.sink import _class_names
from ovperc.masks import coco_rle_to_mask, mask_to_coco_rle

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline
    from ovperc.result import Perception

logger = logging.getLogger(__name__)


@dataclass
class CompactResult:
    """One image's result as it travels from an actor: arrays, names and RLE masks.

    Attributes:
        image_size: ``(width, height)``.
        xyxy: ``(N, 4)`` boxes as the chain returned them.
        confidence: ``(N,)`` scores, or ``None``.
        names: class name per box.
        masks: COCO RLE per box (``{"size", "counts": bytes}``), or ``None`` without masks.
        timings: seconds per stage.

    Example:
        >>> CompactResult.from_perception(result).to_perception().image_size  # doctest: +SKIP
        (640, 480)
    """

    image_size: tuple[int, int]
    xyxy: np.ndarray
    confidence: np.ndarray | None
    names: list[str]
    masks: list[dict[str, Any]] | None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_perception(cls, result: Perception) -> CompactResult:
        """Pack a :class:`~ovperc.result.Perception` (tags and data fields other than names dropped)."""
        det = result.detections
        masks = None
        if det.mask is not None:
            masks = [mask_to_coco_rle(m) for m in det.mask]  # masks cross the Ray boundary as RLE
        return cls(
            image_size=(int(result.image_size[0]), int(result.image_size[1])),
            xyxy=np.asarray(det.xyxy),
            confidence=None if det.confidence is None else np.asarray(det.confidence),
            names=_class_names(result),
            masks=masks,
            timings=dict(result.timings),
        )

    def detections(self) -> sv.Detections:
        """The detections, with ``data["class_name"]`` and bool masks."""
        import supervision as sv

        mask = None
        if self.masks is not None:
            width, height = self.image_size
            if self.masks:
                mask = np.stack([coco_rle_to_mask(r) for r in self.masks])
            else:
                mask = np.zeros((0, height, width), dtype=bool)
        n = len(self.names)
        return sv.Detections(
            xyxy=self.xyxy.reshape(-1, 4),
            confidence=self.confidence,
            class_id=np.zeros(n, dtype=int),
            mask=mask,
            data={"class_name": np.array(self.names, dtype=object)} if n else {},
        )

    def to_perception(self) -> Perception:
        """A :class:`~ovperc.result.Perception` the dataset writers accept."""
        from ovperc.result import Perception

        return Perception(detections=self.detections(), tags=[], image_size=self.image_size,
                          timings=dict(self.timings))


@dataclass(frozen=True)
class Failure:
    """Why an image produced no result: ``kind`` is ``"decode"``, ``"image"`` (a stage
    cannot take this image, e.g. too thin) or ``"pipeline"``.

    Example:
        >>> Failure("decode", "empty file (0 bytes)").message()
        'empty file (0 bytes)'
    """

    kind: str
    reason: str
    error_type: str = ""

    def message(self) -> str:
        """The skip reason the report shows, worded as the local engine words it."""
        if self.kind == "pipeline":
            return f"pipeline failed ({self.error_type}: {self.reason})"
        return self.reason


Outcome = CompactResult | Failure


# ------------------------------------------------------------------------ worker side
def _paths(row: dict[str, Any]) -> list[str]:
    return [os.fsdecode(bytes(p)) for p in row["paths"]]


def _decode_paths(paths: Sequence[str], max_pixels: int, workers: int) -> tuple[list[Any], float]:
    from ovperc.prefetch import decode_images

    start = time.perf_counter()
    out = [decoded for _, decoded in decode_images(paths, workers=workers, max_pixels=max_pixels,
                                                   lookahead=max(len(paths), 1))]
    return out, time.perf_counter() - start


def decode_row(row: dict[str, Any], *, max_pixels: int, workers: int = 1) -> dict[str, Any]:
    """Ray Data task: read and decode one batch's files; bad files become error strings.

    Example:
        >>> decode_row({"index": 0, "paths": [b"a.jpg"]}, max_pixels=10**8)  # doctest: +SKIP
    """
    images, seconds = _decode_paths(_paths(row), max_pixels, workers)
    payload = [image.reason if isinstance(image, ImageError) else image for image in images]
    out = {"index": row["index"], "paths": row["paths"], "decode_s": seconds,
           "images": pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)}
    if "given" in row:
        out["given"] = row["given"]
    return out


class Labeler:
    """Ray Data actor: builds the pipeline once, then labels one batch per row.

    Args:
        factory: a picklable callable returning the :class:`~ovperc.Pipeline` (models load
            on first use, in the actor).
        ontology: the user's classes (``None``: tags decide).
        tag_merge: also detect what the tagger names.
        max_pixels: refuse images declaring more pixels than this.
        decode_workers: threads decoding a row's files when the actor decodes them itself.
        threads: torch threads for the models (the actor's CPUs), so the numbers do not
            depend on how many cores the node has.

    Example:
        >>> labeler = Labeler(factory, Ontology(["dog"]), False, 10**8, 2, 1)  # doctest: +SKIP
        >>> labeler({"index": 0, "paths": [b"a.jpg"]})["index"]  # doctest: +SKIP
        0
    """

    def __init__(self, factory: Callable[[], Pipeline], ontology: Ontology | None, tag_merge: bool,
                 max_pixels: int, decode_workers: int, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.pipeline = factory()
        load_models(self.pipeline)  # a model that cannot load fails the actor, not each image
        self.ontology = ontology
        self.tag_merge = tag_merge
        self.max_pixels = max_pixels
        self.decode_workers = decode_workers

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if "images" in row:
            decoded = pickle.loads(row["images"])
            decode_s = float(row["decode_s"])
        else:
            images, decode_s = _decode_paths(_paths(row), self.max_pixels, self.decode_workers)
            decoded = [image.reason if isinstance(image, ImageError) else image for image in images]
        paths = _paths(row)
        outcomes: list[Outcome | None] = [
            Failure("decode", item) if isinstance(item, str) else None for item in decoded
        ]
        good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
        given = pickle.loads(row["given"]) if row.get("given") is not None else None
        if good:
            results = self._infer([decoded[i] for i in good], [paths[i] for i in good],
                                  None if given is None else [given[i] for i in good])
            for i, result in zip(good, results):
                outcomes[i] = result
        return {"index": row["index"], "decode_s": decode_s,
                "outcomes": pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)}

    def _infer(self, arrays: list[np.ndarray], paths: list[str],
               given: list[Any] | None = None) -> list[Outcome]:
        try:
            results = self.pipeline.run_batch(arrays, classes=self.ontology,
                                              tag_merge=self.tag_merge, sources=paths, detections=given,
                                              errors="return")
        except Exception as error:
            if is_fatal(error, len(arrays)):
                raise
            if len(arrays) > 1:
                logger.warning("pipeline failed on a batch (%s); retrying its images one by one", error)
                return [out for i, (a, p) in enumerate(zip(arrays, paths))
                        for out in self._infer([a], [p], None if given is None else [given[i]])]
            logger.warning("pipeline failed on %s: %s", paths[0], error)
            return [Failure("pipeline", str(error), type(error).__name__)]
        return [Failure("image", r.reason) if isinstance(r, ImageError)
                else CompactResult.from_perception(r) for r in results]
