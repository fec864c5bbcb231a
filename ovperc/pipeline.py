"""``Pipeline``: tag -> detect -> segment -> classify, each stage optional."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ovperc.image import ImageError, ImageSource, UnsupportedImageError, load_image
from ovperc.ontology import ClassesLike, Ontology
from ovperc.prefetch import decode_images
from ovperc.presets import build_preset
from ovperc.result import Perception
from ovperc.thresholds import ClassThresholds
from ovperc.types import Tag
from ovperc.vocabulary import empty_detections, inside, named, sync_ids, to_classes, vocabularies

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.stages.base import Classifier, Detector, Segmenter, Tagger

logger = logging.getLogger(__name__)

NmsMode = Literal["class", "agnostic", "none"]
NMS_MODES = ("class", "agnostic", "none")
ErrorMode = Literal["raise", "return"]
ERROR_MODES = ("raise", "return")


def _shape(image: np.ndarray) -> str:
    height, width = image.shape[:2]
    return f"{width}x{height}"


class Pipeline:
    """Compose whichever stages are given into one chain.

    Args:
        tagger: names what is in the image; with no classes given, its tags become the
            classes to detect.
        detector: finds boxes for the classes' prompts.
        segmenter: turns every box into a mask; boxes that come with masks (from a
            detector that segments, such as SAM 3, or given with masks) keep theirs.
        classifier: re-labels, re-scores or rejects boxes with CLIP.
        nms: ``"class"`` (default) suppresses overlapping boxes of the same class,
            ``"agnostic"`` across classes, ``"none"`` keeps every box. It runs after
            prompts are mapped to classes, so two prompts of one class never yield
            duplicate boxes.
        nms_iou: IoU above which the weaker box is suppressed (default 0.5).
        keep_images: keep each decoded image in its :class:`Perception` (for ``annotate``).
        class_thresholds: per-class confidence thresholds (``{"dog": 0.4}`` or a
            :class:`~ovperc.thresholds.ClassThresholds` with a default, e.g. from
            :func:`~ovperc.thresholds.read_thresholds`): boxes below their class's threshold
            are dropped after prompts are mapped to classes, before segmenting; with a
            classifier, after it (it may change a box's class and score). A class named
            there but not among the classes asked for is an error before any model runs.

    Example:
        >>> pipe = Pipeline.from_preset("detect+segment")  # doctest: +SKIP
        >>> result = pipe("street.jpg", classes=["person", "bicycle"])  # doctest: +SKIP
        >>> result.detections.data["class_name"]  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        tagger: Tagger | None = None,
        detector: Detector | None = None,
        segmenter: Segmenter | None = None,
        classifier: Classifier | None = None,
        nms: NmsMode = "class",
        nms_iou: float = 0.5,
        keep_images: bool = True,
        class_thresholds: Mapping[str, float] | ClassThresholds | None = None,
    ) -> None:
        if nms not in NMS_MODES:
            raise ValueError(f"nms must be one of {NMS_MODES}, got {nms!r}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if not any((tagger, detector, segmenter, classifier)):
            raise ValueError("a pipeline needs at least one stage")
        self.tagger = tagger
        self.detector = detector
        self.segmenter = segmenter
        self.classifier = classifier
        self.nms: NmsMode = nms
        self.nms_iou = nms_iou
        self.keep_images = keep_images
        self.class_thresholds = (None if class_thresholds is None
                                 else ClassThresholds.from_any(class_thresholds))

    @classmethod
    def from_preset(
        cls,
        name: str = "default",
        *,
        device: str = "auto",
        dtype: str = "float32",
        detector: Any = None,
        segmenter: Any = None,
        classifier: Any = None,
        tagger: Any = None,
        options: dict[str, dict[str, Any]] | None = None,
        **pipeline_options: Any,
    ) -> Pipeline:
        """Build a standard chain; models load lazily on first use.

        Args:
            name: a preset from :data:`ovperc.presets.PRESETS` (``default``, ``detect``,
                ``detect+segment``, ``tag+detect+segment``, ...).
            device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:1``, ...
            dtype: ``float32`` (default), ``float16`` or ``bfloat16`` (GPU only).
            detector, segmenter, classifier, tagger: replace a stage's model (hub id or
                local path) or pass a ready stage object.
            options: extra keyword arguments per role, e.g.
                ``{"detector": {"box_threshold": 0.3}}``.
            **pipeline_options: passed to :class:`Pipeline` (``nms``, ``nms_iou``, ...).

        Example:
            >>> Pipeline.from_preset("detect", detector="./my-grounding-dino")  # doctest: +SKIP
        """
        stages = build_preset(
            name,
            device=device,
            dtype=dtype,
            models={"detector": detector, "segmenter": segmenter,
                    "classifier": classifier, "tagger": tagger},
            options=options or {},
        )
        return cls(**stages, **pipeline_options)

    # ------------------------------------------------------------------ checks
    def check(self, classes: ClassesLike | None = None) -> Ontology | None:
        """Check the run's classes against the chain before any image is read.

        Builds the :class:`Ontology` (empty or malformed classes fail here), and asks every
        stage that has a ``check_prompts(prompts)`` method (Grounding DINO: its caption
        token limit, from the tokenizer alone, without loading the weights) whether it can
        take the prompts. ``ovperc label`` and :func:`~ovperc.labeling.label_folder` call
        it first, so a wrong setting fails at once instead of after the first image.

        Args:
            classes: as in :meth:`__call__`; ``None`` when a tagger decides (then only the
                chain itself is checked).

        Returns:
            The ontology (``None`` when no classes are given).

        Raises:
            ValueError: the classes are empty or malformed, a prompt is too long for the
                detector (the message names it), or no classes and no tagger.
            TypeError: a class name is not a string.

        Example:
            >>> pipe.check("person, a dog that is sitting on the left of a red car")  # doctest: +SKIP
            Ontology(['person', 'a dog that is sitting on the left of a red car'])
        """
        ontology = None if classes is None else Ontology.from_any(classes)
        if ontology is None and self.tagger is None and self.detector is not None:
            raise ValueError("no classes given and no tagger to find any: pass classes=[...] "
                             "or use a preset with a tagger")
        if ontology is not None:
            for stage in (self.tagger, self.detector, self.segmenter, self.classifier):
                check_prompts = getattr(stage, "check_prompts", None)
                if callable(check_prompts):
                    check_prompts(ontology.prompts)
        return ontology

    # ------------------------------------------------------------------ public calls
    def __call__(
        self,
        image: ImageSource,
        classes: ClassesLike | None = None,
        *,
        tag_merge: bool = False,
        detections: sv.Detections | None = None,
    ) -> Perception:
        """Run the chain on one image.

        Args:
            image: a path, bytes, PIL image or numpy array.
            classes: what to detect: a list, a ``prompt -> class`` dict, ``"a, b, c"`` or
                an :class:`Ontology`. Without classes the tagger's tags are used.
            tag_merge: with classes given, also detect the tagger's tags.
            detections: boxes you already have (skips the detector; e.g. box -> mask).

        Raises:
            ImageError: the image cannot be decoded.
            ValueError: no classes and no tagger to find any.

        Example:
            >>> pipe("street.jpg", classes="person, car").detections  # doctest: +SKIP
        """
        array = load_image(image)
        source = str(image) if isinstance(image, (str, os.PathLike)) else None
        run_ontology = None if classes is None else Ontology.from_any(classes)
        given = None if detections is None else [detections]
        return self.run_batch([array], classes=run_ontology, tag_merge=tag_merge,
                              sources=[source], detections=given)[0]

    def map(
        self,
        images: Iterable[ImageSource],
        classes: ClassesLike | None = None,
        *,
        batch_size: int = 1,
        tag_merge: bool = False,
        skip_errors: bool = False,
        decode_workers: int = 2,
    ) -> Iterator[Perception]:
        """Run the chain over many images, in batches, yielding results in order.

        Images are decoded in background threads while the models run. When classes come
        from tags, class ids are kept stable for the whole run (new tags get new ids).

        Args:
            images: paths, bytes, PIL images or arrays.
            classes: as in :meth:`__call__`.
            batch_size: images per model call.
            tag_merge: as in :meth:`__call__`.
            skip_errors: log and skip images that cannot be decoded or processed instead of
                raising ``ImageError`` (the other images of their batch are still yielded).
            decode_workers: background decoding threads.

        Example:
            >>> for result in pipe.map(paths, classes=["dog"], batch_size=4):  # doctest: +SKIP
            ...     print(result.source, len(result.detections))
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        user_classes = None if classes is None else Ontology.from_any(classes)
        run_ontology = user_classes
        batch: list[np.ndarray] = []
        sources: list[str | None] = []
        for source, decoded in decode_images(images, workers=decode_workers,
                                             lookahead=max(2 * batch_size, 4)):
            if isinstance(decoded, ImageError):
                if skip_errors:
                    logger.warning("skipped %s", decoded)
                    continue
                raise decoded
            batch.append(decoded)
            sources.append(str(source) if isinstance(source, (str, os.PathLike)) else None)
            if len(batch) == batch_size:
                results = self._map_batch(batch, user_classes, tag_merge, sources, run_ontology,
                                          skip_errors)
                run_ontology = (results[-1].ontology or run_ontology) if results else run_ontology
                yield from results
                batch, sources = [], []
        if batch:
            yield from self._map_batch(batch, user_classes, tag_merge, sources, run_ontology,
                                       skip_errors)

    def _map_batch(self, batch: list[np.ndarray], classes: Ontology | None, tag_merge: bool,
                   sources: list[str | None], run_ontology: Ontology | None,
                   skip_errors: bool) -> list[Perception]:
        results = self.run_batch(batch, classes=classes, tag_merge=tag_merge, sources=sources,
                                 run_ontology=run_ontology,
                                 errors="return" if skip_errors else "raise")
        return [r for r in results if not isinstance(r, ImageError)]  # run_batch logged skips

    def track(self, frames: Iterable[Any], classes: ClassesLike | None = None, *, tag_merge: bool = False,
              **options: Any) -> Iterator[Any]:
        """Follow every object of ``classes`` through video frames, each under a stable id.

        A thin entry to :class:`ovperc.Tracker` (``options`` are its arguments:
        ``video_segmenter``, ``detect_every``, ``new_track_iou``, ``max_lost``, ...), yielding
        one :class:`~ovperc.video.types.FrameTracks` per frame.

        Example:
            >>> for tracks in pipe.track(frames, "person, car", detect_every=5):  # doctest: +SKIP
            ...     print(tracks.index, tracks.detections.tracker_id)
        """
        from ovperc.video.tracker import Tracker

        return Tracker(self, **options).track(frames, classes, tag_merge=tag_merge)

    # ------------------------------------------------------------------ the chain
    def run_batch(
        self,
        images: Sequence[np.ndarray],
        classes: Ontology | None = None,
        *,
        tag_merge: bool = False,
        run_ontology: Ontology | None = None,
        sources: Sequence[str | None] | None = None,
        detections: Sequence[sv.Detections] | None = None,
        errors: ErrorMode = "raise",
    ) -> list[Any]:
        """Run the chain on decoded RGB ``uint8`` images; the engine under ``map`` and ``label``.

        ``classes`` are the user's classes (``None``: the tags decide). When tags add
        classes, the results' ``ontology`` extends ``run_ontology`` (which starts as
        ``classes``); passing it on to the next batch keeps class ids stable for a run.

        Every stage clamps what it can (a 1x100000 strip is resized with no side below one
        pixel), so any decoded image normally runs. An image that a stage still cannot
        process makes it raise :class:`~ovperc.image.UnsupportedImageError` for that
        image; the chain then runs again on the batch without it, so the other images'
        results are never lost. With ``errors="raise"`` (default) that error, naming the
        image, is raised (before any result is returned); with ``errors="return"`` it
        takes the image's place in the returned list and every other image still gets its
        :class:`Perception`. Any other exception (a missing model, out of memory, a bug)
        is raised in both modes: it is not about one image.

        Args:
            images: RGB ``uint8`` arrays ``(H, W, 3)``.
            classes: the user's :class:`Ontology`, or ``None`` to use the tags.
            tag_merge: with classes given, also detect the tagger's tags.
            run_ontology: the run's classes so far (keeps ids stable across batches).
            sources: where each image came from (file paths), named in results and errors.
            detections: boxes per image that skip the detector.
            errors: ``"raise"`` or ``"return"`` (see above).

        Returns:
            One :class:`Perception` per image, in order (or, with ``errors="return"``, an
            ``UnsupportedImageError`` in the place of an image that could not be processed).

        Example:
            >>> pipe.run_batch([image], classes=Ontology(["cat"]))  # doctest: +SKIP
            >>> pipe.run_batch([strip, photo], classes=Ontology(["cat"]), errors="return")  # doctest: +SKIP
            [UnsupportedImageError('...'), Perception(...)]
        """
        if errors not in ERROR_MODES:
            raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
        n = len(images)
        sources = list(sources) if sources is not None else [None] * n
        positions = list(range(n))  # the images still in the batch
        failed: dict[int, UnsupportedImageError] = {}
        while True:
            try:
                done = self._run_chain(
                    [images[i] for i in positions], classes, tag_merge, run_ontology,
                    [sources[i] for i in positions],
                    None if detections is None else [detections[i] for i in positions],
                )
                break
            except UnsupportedImageError as error:
                if error.index is None or not 0 <= error.index < len(positions):
                    raise
                at = positions.pop(error.index)
                named = error.with_source(sources[at] if sources[at] is not None
                                          else f"image {at} of the batch ({_shape(images[at])})", at)
                if errors == "raise":
                    raise named from error
                logger.warning("skipped %s", named)
                failed[at] = named
        results: list[Any] = list(done)
        for at in sorted(failed):
            results.insert(at, failed[at])
        return results

    def _run_chain(
        self,
        images: Sequence[np.ndarray],
        classes: Ontology | None,
        tag_merge: bool,
        run_ontology: Ontology | None,
        sources: list[str | None],
        detections: Sequence[sv.Detections] | None,
    ) -> list[Perception]:
        """The chain itself; stages raise ``UnsupportedImageError`` with the image's index."""
        n = len(images)
        if n == 0:
            return []
        thresholds = self.class_thresholds
        if thresholds is not None and classes is not None and detections is None \
                and not (tag_merge and self.tagger is not None):
            thresholds.check_classes(classes.classes)
        timings: list[dict[str, float]] = [{} for _ in range(n)]

        def timed(stage: str, fn: Any, *args: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args)
            share = (time.perf_counter() - start) / n
            for t in timings:
                t[stage] = share
            return out

        tags: list[list[Tag]] = [[] for _ in range(n)]
        if self.tagger is not None:
            tags = timed("tag", self.tagger.tag, list(images))

        run_ontology, local = vocabularies(
            classes, run_ontology, tags, tag_merge, tagger=self.tagger is not None,
            detector=self.detector is not None, need=detections is None
        )

        if detections is not None:
            if len(detections) != n:
                raise ValueError(f"got {len(detections)} detections for {n} images")
            dets = [named(inside(d, img), run_ontology) for d, img in zip(detections, images)]
            names = [str(n) for d in dets for n in d.data.get("class_name", [])]
            unknown = [n for n in dict.fromkeys(names)
                       if run_ontology is None or n not in run_ontology.classes]
            if unknown:  # classes named only by the given boxes join the run's classes
                run_ontology = Ontology(unknown) if run_ontology is None else run_ontology.extend(unknown)
                local = [run_ontology if o is None else o.extend(unknown) for o in local]
            if run_ontology is not None:
                dets = [sync_ids(d, run_ontology) for d in dets]
        elif self.detector is not None:
            prompts = [o.prompts if o is not None else [] for o in local]
            raw = timed("detect", self.detector.detect, list(images), prompts)
            dets = [to_classes(d, o, run_ontology) for d, o in zip(raw, local)]
        else:
            dets = [empty_detections() for _ in range(n)]

        if thresholds is not None and self.classifier is None:
            dets = [thresholds.filter(d) for d in dets]

        if self.nms != "none":
            dets = [self._suppress(d) for d in dets]

        if self.segmenter is not None:
            dets = timed("segment", self._segment, list(images), dets)

        if self.classifier is not None:
            if any(o is None for o in local):
                local = [o if o is not None else run_ontology for o in local]
            if run_ontology is not None:
                dets = timed("classify", self.classifier.classify, list(images), dets, local)
                dets = [sync_ids(d, run_ontology) for d in dets]
            if thresholds is not None:
                dets = [thresholds.filter(d) for d in dets]

        return [
            Perception(
                detections=det,
                tags=list(tag_list),
                image_size=(int(img.shape[1]), int(img.shape[0])),
                timings=timing,
                ontology=run_ontology,
                source=src,
                image=img if self.keep_images else None,
            )
            for det, tag_list, timing, src, img in zip(dets, tags, timings, sources, images)
        ]

    # ------------------------------------------------------------------ helpers
    def _segment(self, images: list[np.ndarray], dets: list[sv.Detections]) -> list[sv.Detections]:
        """Masks for every box. Images without boxes are not sent to the segmenter, and boxes
        that already carry masks (a detector that segments, like SAM 3) keep them."""
        assert self.segmenter is not None
        busy = [i for i, d in enumerate(dets) if len(d) and d.mask is None]
        out = list(dets)
        if busy:
            try:
                done = self.segmenter.segment([images[i] for i in busy], [dets[i] for i in busy])
            except UnsupportedImageError as error:  # its index is into the images it was given
                if error.index is not None and 0 <= error.index < len(busy):
                    error.index = busy[error.index]
                raise
            for i, det in zip(busy, done):
                out[i] = det
        for i, (image, det) in enumerate(zip(images, out)):
            if not len(det) and det.mask is None:
                det = empty_detections()
                det.mask = np.zeros((0, *image.shape[:2]), dtype=bool)
                out[i] = det
        return out

    def _suppress(self, det: sv.Detections) -> sv.Detections:
        if len(det) < 2:
            return det
        return det.with_nms(threshold=self.nms_iou, class_agnostic=self.nms == "agnostic")

    def __repr__(self) -> str:
        parts = [f"{role}={type(stage).__name__}" for role, stage in (
            ("tagger", self.tagger), ("detector", self.detector),
            ("segmenter", self.segmenter), ("classifier", self.classifier)) if stage is not None]
        return f"Pipeline({', '.join(parts)}, nms={self.nms!r}, nms_iou={self.nms_iou})"
