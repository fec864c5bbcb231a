"""What one demo request does, without any web framework.

:class:`DemoRunner` checks the input (image, classes, stage switches, thresholds), runs a
per-request *view* of the pipeline and writes the downloadable files. The Gradio layer in
:mod:`ovperc.demo.app` only turns its results and its :class:`DemoInputError` messages into
page updates.

What the page should say besides the result (how an image was resized, how the classes
were chosen, what to try when nothing was found) comes back with the result, so it is
the same for the page and for API clients.

A view is a new, lightweight :class:`~ovperc.Pipeline` over the same stage objects, so
models load once and switching a stage off for one request never changes what another
request sees. Thresholds are applied after detection, on the detector's output, rather
than by changing the shared detector's attributes: the detector's own thresholds are the
floor, and a request can only be stricter.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.demo.guide import DemoGuide, guide_for, split_classes
from ovperc.demo.hints import result_hint
from ovperc.demo.render import (  # noqa: F401  (re-exported: the page's helpers)
    TABLE_HEADERS,
    detections_table,
    instance_mask,
    tag_scores,
)
from ovperc.demo.thresholds import ThresholdedDetector, threshold_of
from ovperc.image import ImageError, ImageSource, load_image
from ovperc.ontology import Ontology
from ovperc.pipeline import Pipeline

if TYPE_CHECKING:

    from ovperc.result import Perception

logger = logging.getLogger(__name__)


class DemoInputError(ValueError):
    """A request the demo refuses; the message is written for the person using the page."""


@dataclass(frozen=True)
class DemoLimits:
    """What the demo accepts.

    Attributes:
        max_pixels: images with more pixels are refused (40 MP: a 7,700 x 5,200 photo).
        min_side: images with a side shorter than this (also after downscaling) are
            refused: 32 px is one step of the last stage of Grounding DINO's Swin backbone
            and two of SAM's 16 px patches; below it the models see almost nothing and
            return noise (a 1x1 image got boxes).
        max_side: images with a longer side are downscaled to it before the models run,
            which bounds mask memory and the size of the page's result image.
        max_classes: the most classes one request may name.
        max_class_chars: the longest class name accepted.
        max_file_mb: the largest upload the server accepts, in MB.
        keep_seconds: result files older than this are removed from the work folder.

    Example:
        >>> DemoLimits(max_classes=200).max_classes
        200
    """

    max_pixels: int = 40_000_000
    min_side: int = 32
    max_side: int = 2048
    max_classes: int = 1000
    max_class_chars: int = 200
    max_file_mb: int = 50
    keep_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("max_pixels", "min_side", "max_side", "max_classes", "max_class_chars",
                     "max_file_mb", "keep_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DemoLimits.{name} must be > 0, got {getattr(self, name)}")
        if self.min_side > self.max_side:
            raise ValueError(f"DemoLimits.min_side ({self.min_side}) must be at most max_side "
                             f"({self.max_side})")


@dataclass(frozen=True)
class RunOptions:
    """One request's settings, as the page sends them.

    Attributes:
        classes: classes to find, separated by commas or new lines; empty (``""``) lets the
            tagger choose. Text that names no class (only commas or spaces) is refused.
        tagging: run the tagger (when the pipeline has one).
        detect_tags: with classes given, also look for the tagger's tags.
        segment: run the segmenter (when the pipeline has one).
        classify: run the CLIP classifier (when the pipeline has one).
        clip_mode: the classifier's mode for this request (``None``: its own).
        box_threshold: keep boxes whose detector confidence is at least this.
        text_threshold: keep boxes whose class text score is at least this.

    Example:
        >>> RunOptions(classes="cat, dog", segment=False).classes
        'cat, dog'
    """

    classes: str = ""
    tagging: bool = True
    detect_tags: bool = False
    segment: bool = True
    classify: bool = True
    clip_mode: str | None = None
    box_threshold: float | None = None
    text_threshold: float | None = None


@dataclass(frozen=True)
class PreparedImage:
    """An upload as the models see it.

    Attributes:
        image: the RGB image the models run on.
        original_size: ``(width, height)`` of the upload.
        scale: the processed size over the original (1.0 when not downscaled); a box in
            the original's pixels is the box divided by it.
        note: a remark for the page about the resizing, or ``""``.
    """

    image: np.ndarray
    original_size: tuple[int, int]
    scale: float = 1.0
    note: str = ""


@dataclass
class DemoResult:
    """What one request produced.

    Attributes:
        perception: the pipeline's result (its ``image`` is the processed image).
        note: a remark for the page (e.g. that the image was downscaled), or ``""``.
        seconds: wall time of the pipeline run.
        json_path: the written :meth:`to_dict` file.
        mask_path: the written instance mask PNG, when there are masks.
        original_size: ``(width, height)`` of the upload.
        scale: the processed size over the original (1.0 when not downscaled).
        hint: how the classes were chosen and, when nothing was found, what to try
            (Markdown), or ``""``.
    """

    perception: Perception
    note: str
    seconds: float
    json_path: Path
    mask_path: Path | None
    original_size: tuple[int, int] | None = None
    scale: float = 1.0
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``Perception.to_dict()``; for a downscaled image also the original size and the scale.

        Boxes and masks refer to ``image_size``; divide a box by ``scale`` for the
        original's pixels.

        Example:
            >>> result.to_dict()["scale"]  # a 4096 px wide upload  # doctest: +SKIP
            0.5
        """
        record = self.perception.to_dict()
        if self.original_size is not None and self.scale != 1.0:
            width, height = self.original_size
            record["original_image_size"] = {"width": width, "height": height}
            record["scale"] = self.scale
        return record


def _safe_stem(name: str | None) -> str:
    stem = Path(name).stem if name else "image"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40]
    return stem or "image"


class DemoRunner:
    """Runs demo requests on one loaded pipeline.

    Args:
        pipeline: the stages to use; models load once and are shared by every request.
        workdir: the folder where result files are written.
        limits: what the demo accepts.
        guide: what the models know and what the page suggests; by default
            :func:`~ovperc.demo.guide.guide_for` the pipeline.
        owns_workdir: the folder is the demo's own (a temporary folder it made), so any old
            file in it may go; ``False`` for a folder someone gave, where only the result
            files this runner wrote are ever removed.

    Raises:
        ValueError: the pipeline has neither a detector nor a tagger.

    Example:
        >>> runner = DemoRunner(pipeline, workdir=tmp)  # doctest: +SKIP
        >>> runner.run("street.jpg", RunOptions(classes="person, car")).perception  # doctest: +SKIP
    """

    def __init__(self, pipeline: Pipeline, workdir: str | Path,
                 limits: DemoLimits | None = None, guide: DemoGuide | None = None, *,
                 owns_workdir: bool = True) -> None:
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"the demo needs an ovperc.Pipeline, got {type(pipeline).__name__}")
        if pipeline.detector is None and pipeline.tagger is None:
            raise ValueError(f"the demo needs a pipeline with a detector or a tagger, got {pipeline!r}")
        self.pipeline = pipeline
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.owns_workdir = owns_workdir
        self._written: list[Path] = []  # result files of this runner, oldest first
        self.limits = limits or DemoLimits()
        self.guide = guide or guide_for(pipeline)

    # ------------------------------------------------------------------ what the pipeline has
    @property
    def has_tagger(self) -> bool:
        return self.pipeline.tagger is not None

    @property
    def has_detector(self) -> bool:
        return self.pipeline.detector is not None

    @property
    def has_segmenter(self) -> bool:
        return self.pipeline.segmenter is not None and self.has_detector

    @property
    def has_classifier(self) -> bool:
        return self.pipeline.classifier is not None and self.has_detector

    @property
    def clip_modes(self) -> tuple[str, ...]:
        """The classifier's modes, when it has a ``mode`` to switch (else empty)."""
        classifier = self.pipeline.classifier
        if classifier is None or not isinstance(getattr(classifier, "mode", None), str):
            return ()
        from ovperc.stages.clip_classifier import MODES

        return tuple(MODES) if classifier.mode in MODES else (classifier.mode,)

    @property
    def clip_mode(self) -> str | None:
        """The classifier's own mode."""
        mode = getattr(self.pipeline.classifier, "mode", None)
        return mode if isinstance(mode, str) else None

    @property
    def box_threshold(self) -> float:
        """The detector's own box threshold (the lowest a request can use), 0 if unknown."""
        return threshold_of(self.pipeline.detector, "box_threshold") or 0.0

    @property
    def text_threshold(self) -> float | None:
        """The detector's own text threshold, ``None`` when it has none."""
        return threshold_of(self.pipeline.detector, "text_threshold")

    # ------------------------------------------------------------------ one request
    def view(self, options: RunOptions) -> Pipeline:
        """A per-request pipeline over the same stage objects (no model is copied).

        Raises:
            DemoInputError: the options switch every stage off, or name an unknown mode.
        """
        base = self.pipeline
        tagger = base.tagger if options.tagging else None
        detector = base.detector
        if detector is not None and (options.box_threshold is not None
                                     or options.text_threshold is not None):
            detector = ThresholdedDetector(detector, options.box_threshold,
                                            options.text_threshold)
        segmenter = base.segmenter if options.segment and detector is not None else None
        classifier = None
        if options.classify and detector is not None and base.classifier is not None:
            classifier = self._classifier(options.clip_mode)
        if tagger is None and detector is None:
            raise DemoInputError("Every stage is switched off: switch tagging on.")
        return Pipeline(tagger=tagger, detector=detector, segmenter=segmenter,
                        classifier=classifier, nms=base.nms, nms_iou=base.nms_iou,
                        keep_images=True)

    def _classifier(self, mode: str | None) -> Any:
        classifier = self.pipeline.classifier
        if mode is None or mode == self.clip_mode:
            return classifier
        if mode not in self.clip_modes:
            raise DemoInputError(
                f"Unknown CLIP mode {mode!r}; choose one of: {', '.join(self.clip_modes)}.")
        # A shallow copy shares the loaded model and its text-embedding cache.
        view = copy.copy(classifier)
        view.mode = mode
        return view

    def read_image(self, source: ImageSource, name: str | None = None) -> PreparedImage:
        """Decode an upload, refusing what the demo cannot take; downscale large images.

        Raises:
            DemoInputError: no image, not an image, empty, corrupt, too large, or too
                small (a side under ``limits.min_side``, also after downscaling).
        """
        label = name or "the upload"
        if source is None:
            raise DemoInputError("Upload an image (or pick an example) first.")
        try:
            image = load_image(source, max_pixels=self.limits.max_pixels)
        except ImageError as error:
            # the library's advice to raise max_pixels is for programmers, not for the page
            reason = error.reason.split(" (raise max_pixels")[0]
            raise DemoInputError(f"{label} cannot be used: {reason}.") from None
        height, width = image.shape[:2]
        least = self.limits.min_side
        if min(height, width) < least:
            raise DemoInputError(
                f"{label} is {width}x{height} pixels: too small to find anything in. The demo "
                f"needs at least {least} px on each side; upload a larger image.")
        if max(height, width) <= self.limits.max_side:
            return PreparedImage(image, original_size=(width, height))
        from PIL import Image

        scale = self.limits.max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(size) < least:
            raise DemoInputError(
                f"{label} is {width}x{height} pixels: too narrow. Downscaled to "
                f"{self.limits.max_side} px on its longer side it would be {size[0]}x{size[1]}, "
                f"under the {least} px the demo needs on each side.")
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR,
                                                         reducing_gap=3.0))
        note = (f"The image ({width}x{height}) was downscaled to {size[0]}x{size[1]} for the "
                f"demo (longer side at most {self.limits.max_side} px); boxes refer to that size. "
                f"The JSON records the original size and the scale ({scale:.4g}).")
        return PreparedImage(np.ascontiguousarray(small), original_size=(width, height),
                             scale=scale, note=note)

    def ontology(self, text: str | None, options: RunOptions) -> Ontology | None:
        """The request's classes, or ``None`` to let the tagger choose.

        Only an empty box lets the tagger choose; text that names no class (commas,
        semicolons, spaces) is refused rather than silently treated as empty.

        Raises:
            DemoInputError: no classes and no tagger to choose them, text that names no
                class, too many classes, or a class name that is too long.
        """
        names = split_classes(text)
        if not names and text and self.has_detector:
            tagger = ", or clear the box to let the tagger choose" if self.has_tagger else ""
            raise DemoInputError(
                f"The classes box holds {text[:40]!r}, which names no class. Type class names "
                f"separated by commas (e.g. `{self.guide.placeholder}`){tagger}.")
        if not names:
            if not self.has_detector:
                return None
            if not self.has_tagger:
                raise DemoInputError(
                    f"Type the classes to find, separated by commas (e.g. `{self.guide.placeholder}`): "
                    "this demo has no tagger to suggest them.")
            if not options.tagging:
                raise DemoInputError(
                    "Type the classes to find, or switch tagging on to let the tagger pick them.")
            return None
        if len(names) > self.limits.max_classes:
            raise DemoInputError(
                f"{len(names):,} classes given; the demo takes at most "
                f"{self.limits.max_classes:,} per image.")
        too_long = [n for n in names if len(n) > self.limits.max_class_chars]
        if too_long:
            raise DemoInputError(
                f"A class name is {len(too_long[0]):,} characters long; the limit is "
                f"{self.limits.max_class_chars}. Separate classes with commas.")
        return Ontology(names)

    def run(self, source: ImageSource | None, options: RunOptions,
            name: str | None = None) -> DemoResult:
        """Run one request and write its files.

        Args:
            source: the uploaded file's path (or any :func:`~ovperc.load_image` input).
            options: the page's settings.
            name: the file name the user uploaded (for messages and file names).

        Raises:
            DemoInputError: anything the page should explain instead of a result.

        Example:
            >>> runner.run("shapes.png", RunOptions(classes="red square")).json_path  # doctest: +SKIP
        """
        upload = self.read_image(source, name)
        view = self.view(options)
        classes = self.ontology(options.classes, options)
        start = time.perf_counter()
        try:
            [perception] = view.run_batch([upload.image], classes=classes,
                                          tag_merge=options.detect_tags, sources=[name])
        except ValueError as error:
            raise DemoInputError(f"The pipeline refused this request: {error}") from error
        seconds = time.perf_counter() - start
        result = DemoResult(perception=perception, note=upload.note, seconds=seconds,
                            json_path=Path(), mask_path=None, original_size=upload.original_size,
                            scale=upload.scale, hint=result_hint(self, perception, options, view))
        result.json_path, result.mask_path = self.write_files(perception, name,
                                                              record=result.to_dict())
        return result

    # ------------------------------------------------------------------ files
    def write_files(self, perception: Perception, name: str | None = None, *,
                    record: dict[str, Any] | None = None) -> tuple[Path, Path | None]:
        """Write the result JSON and (with masks) the instance mask PNG into the work folder.

        Args:
            perception: the result.
            name: the user's file name, for the files' names.
            record: the JSON to write; by default ``perception.to_dict()``.

        Example:
            >>> json_path, mask_path = runner.write_files(result, "street.jpg")  # doctest: +SKIP
        """
        from PIL import Image

        self._remove_old_files()
        stem = f"{_safe_stem(name)}-{uuid.uuid4().hex[:8]}"
        json_path = self.workdir / f"{stem}.json"
        record = perception.to_dict() if record is None else record
        json_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        self._written.append(json_path)
        mask = instance_mask(perception)
        mask_path = None
        if mask is not None:
            mask_path = self.workdir / f"{stem}-masks.png"
            Image.fromarray(mask).save(mask_path)
            self._written.append(mask_path)
        return json_path, mask_path

    def result_paths(self, *names: str) -> list[Path]:
        """Paths in the work folder for new result files, recorded as this runner's (so they
        are removed, like the others, once older than ``keep_seconds``); old files go first.

        Example:
            >>> runner.result_paths("clip-3f2a9c1e-tracked.mp4")  # doctest: +SKIP
            [PosixPath('/tmp/ovperc-demo-x1/clip-3f2a9c1e-tracked.mp4')]
        """
        self._remove_old_files()
        paths = [self.workdir / name for name in names]
        self._written.extend(paths)
        return paths

    def _remove_old_files(self) -> None:
        """Result files past ``keep_seconds`` go: any in the demo's own folder, only this
        runner's in a folder someone else gave."""
        cutoff = time.time() - self.limits.keep_seconds
        candidates = list(self.workdir.iterdir()) if self.owns_workdir else list(self._written)
        for path in candidates:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:  # removed by another request meanwhile
                pass
            if not path.exists() and path in self._written:
                self._written.remove(path)
