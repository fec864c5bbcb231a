"""Add a SAM mask to every box of an existing YOLO, COCO or Pascal VOC dataset.

The output is the same dataset with masks: the same classes (names and order), boxes,
image files and split folders, written by the labelling package's writers (YOLO
segmentation polygons, COCO RLE, VOC instance-mask PNGs in ``masks/``). It is a job of the
labelling engine (:mod:`ovperc.labeling.engine`), so it resumes, skips a bad image with a
reason in ``report.json``, never touches a file it did not write, and runs locally or on
Ray exactly as ``ovperc label`` does.

Each mask is clipped to its box (pixels SAM puts outside the box prompt are dropped), so
masks and boxes stay aligned. YOLO segmentation lines carry no box of their own: readers
take the polygon's extent, which lies inside the original box.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.atomic import atomic_copy
from ovperc.datasets.io import Dataset, Split, load_dataset
from ovperc.image import DEFAULT_MAX_PIXELS
from ovperc.labeling.engine import Job, LabelEngine, preflight, run_job
from ovperc.labeling.report import Report
from ovperc.labeling.scan import ScanEntry
from ovperc.labeling.writers import DatasetWriter, ImageItem, ImageMode, make_writer

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.result import Perception
    from ovperc.stages.base import Segmenter

logger = logging.getLogger(__name__)


def _split_base(split: Split) -> Path:
    """The folder a split's files hang from (``train/`` for ``train/images``)."""
    if split.format == "coco":
        return split.annotations.parent
    return split.images_dir.parent


def clip_to_boxes(masks: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """Masks with every pixel outside their own box cleared.

    Example:
        >>> m = np.ones((1, 4, 4), bool)
        >>> clip_to_boxes(m, np.array([[1., 1., 3., 3.]])).sum()
        np.int64(4)
    """
    out = np.zeros_like(masks, dtype=bool)
    height, width = masks.shape[1:]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, dtype=np.float64)):
        c1, r1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
        c2, r2 = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
        out[i, r1:r2, c1:c2] = masks[i, r1:r2, c1:c2]
    return out


class SplitWriter(DatasetWriter):
    """Writes each image into its input split's own folders, in the input's format.

    The output mirrors the input's layout (``train/images``, ``valid/labels``, one COCO json
    per split, ...): every split gets a writer of its own under the matching folder. A YOLO
    split keeps its input ``data.yaml`` (copied once); COCO and VOC splits get their
    annotation files from their writer.

    Example:
        >>> writer = SplitWriter(load_dataset("boxes/"), "boxes-masks/")  # doctest: +SKIP
    """

    def __init__(self, dataset: Dataset, out: str | os.PathLike, *, images: ImageMode = "copy",
                 mask_png: bool = False, durable: bool = True) -> None:
        super().__init__(out, masks=True, mask_png=mask_png, images=images, durable=durable)
        self.format = dataset.format
        self.dataset = dataset
        self.splits = {split.name: split for split in dataset.splits}
        self.writers = {
            name: make_writer(dataset.format, self.out / _split_base(split).relative_to(dataset.root),
                              masks=True, mask_png=mask_png, images=images, durable=durable)
            for name, split in self.splits.items()
        }

    def _route(self, item: ImageItem) -> tuple[DatasetWriter, ImageItem]:
        return self.writers[item.split], ImageItem(item.source, item.stem, item.suffix, item.width,
                                                   item.height)

    def paths(self, item: ImageItem) -> list[Path]:
        writer, inner = self._route(item)
        return writer.paths(inner)

    def write(self, item: ImageItem, detections: sv.Detections, classes: list[str], *,
              image: bool = True) -> None:
        writer, inner = self._route(item)
        writer.write(inner, detections, classes, image=image)

    def _data_yaml(self, name: str) -> tuple[Path, Path] | None:
        split = self.splits[name]
        if split.data_yaml is None:
            return None
        return split.data_yaml, self.out / split.data_yaml.relative_to(self.dataset.root)

    def dataset_files(self, splits: Iterable[str] = ()) -> list[Path]:
        names = sorted(set(splits))
        if self.format == "yolo":
            copies = [self._data_yaml(name) for name in names]
            return sorted({copy for pair in copies if pair is not None for _, copy in [pair]})
        return [p for name in names for p in self.writers[name].dataset_files()]

    def finalize(self, classes: list[str], stems: Iterable[str], splits: Sequence[str] | None = None) -> None:
        stems = list(stems)
        splits = list(splits) if splits is not None else [""] * len(stems)
        for name in sorted(set(splits)):
            if self.format == "yolo":
                pair = self._data_yaml(name)
                if pair is not None:
                    atomic_copy(pair[0], pair[1], durable=self.durable)
                continue
            chosen = [stem for stem, split in zip(stems, splits) if split == name]
            self.writers[name].finalize(classes, chosen)

    def managed(self) -> list[Path]:
        return [p for writer in self.writers.values() for p in writer.managed()]


def _check_masks(result: Perception) -> Perception:
    """Each box's mask, clipped to the box; a mask array of the wrong shape skips the image."""
    det = result.detections
    width, height = result.image_size
    if not len(det):
        return result
    masks = np.asarray(det.mask, dtype=bool) if det.mask is not None else None
    if masks is None or masks.shape != (len(det), height, width):
        shape = None if masks is None else masks.shape
        raise ValueError(f"segmenter returned masks of shape {shape} for {len(det)} boxes on a "
                         f"{width}x{height} image")
    det = det[:]
    det.mask = clip_to_boxes(masks, det.xyxy)
    result.detections = det
    return result


def segment_dataset(
    segmenter: Segmenter,
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fmt: str = "auto",
    images: ImageMode = "copy",
    mask_png: bool = False,
    batch_size: int = 4,
    overwrite: bool = False,
    signature: dict[str, Any] | None = None,
    decode_workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    durable: bool = True,
    engine: LabelEngine | None = None,
    write_behind: bool = False,
) -> Report:
    """Write ``dataset`` to ``out`` with a mask for every box; resumable.

    Args:
        segmenter: turns boxes into masks (e.g. :class:`ovperc.stages.sam.SamSegmenter`).
        dataset: a YOLO, COCO or Pascal VOC box dataset folder.
        out: the output dataset folder (must differ from ``dataset``).
        fmt: ``auto``, ``yolo``, ``coco`` or ``voc`` (the output keeps the input's format).
        images: put images in ``out`` by ``copy``, ``hardlink``, ``symlink`` or ``none``.
        mask_png: also write an instance-mask PNG per image in ``masks/`` (VOC always does).
        batch_size: images per segmenter call.
        overwrite: discard a previous run in ``out`` whose settings differ.
        signature: extra settings that define the run (the segmenter model); a resumed run
            must match them.
        decode_workers: background decoding threads.
        max_pixels: refuse images declaring more pixels than this.
        progress: show a progress bar on stderr.
        durable: ``fsync`` files before renaming them into place.
        engine: where the segmenter runs; ``None`` runs it in this process, a
            :class:`~ovperc.labeling.ray_engine.RayEngine` on a Ray cluster (its factory
            builds a pipeline holding the segmenter); the dataset written is the same.
        write_behind: write each batch on a background thread while the next one runs.

    Returns:
        The :class:`~ovperc.labeling.report.Report`, also saved as ``out/report.json``.

    Raises:
        ManifestMismatchError: ``out`` holds a run with other settings (see ``overwrite``).
        DatasetError: ``dataset`` is not a dataset of the given format.
        ValueError: ``out`` is ``dataset`` or inside it; bad arguments.

    Example:
        >>> from ovperc.stages.sam import SamSegmenter  # doctest: +SKIP
        >>> segment_dataset(SamSegmenter("vit_b"), "boxes/", "boxes-masks/")  # doctest: +SKIP
    """
    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    src, dst = Path(dataset).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"--out {out} must not be the dataset folder {dataset} or inside it")
    ds = load_dataset(dataset, fmt)
    writer = SplitWriter(ds, out, images=images, mask_png=mask_png, durable=durable)
    run_signature = {"task": "segment", "source": str(src), "format": ds.format,
                     "classes": ds.classes, "images": images, "mask_png": bool(mask_png),
                     **(signature or {})}
    pipeline = Pipeline(segmenter=segmenter, nms="none")
    preflight(out, run_signature, pipeline, overwrite=overwrite, engine=engine)
    entries, stems = [], {}
    for item in ds:
        entries.append(ScanEntry(item.path, item.key, split=item.split.name, given=item.detections))
        stems[item.key] = item.path.relative_to(item.split.images_dir).with_suffix("").as_posix()
    job = Job(pipeline, entries, stems, writer, run_signature, list(ds.classes), source=str(dataset),
              format=ds.format, ontology=Ontology(ds.classes), refine=_check_masks,
              failure="segmenter failed")
    return run_job(job, out, overwrite=overwrite, engine=engine, batch_size=batch_size,
                   decode_workers=decode_workers, max_pixels=max_pixels, progress=progress,
                   write_behind=write_behind)
