"""Add a SAM mask to every box of an existing YOLO, COCO or Pascal VOC dataset.

The output is the same dataset with masks: the same classes (names and order), boxes,
image files and split folders, written by the labelling package's writers (YOLO
segmentation polygons, COCO RLE, VOC instance-mask PNGs in ``masks/``), each image's files
atomically and recorded in the same manifest, so an interrupted run resumes where it
stopped and a bad image is skipped with a reason in ``report.json``.

Each mask is clipped to its box (pixels SAM puts outside the box prompt are dropped), so
masks and boxes stay aligned. YOLO segmentation lines carry no box of their own: readers
take the polygon's extent, which lies inside the original box.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.atomic import atomic_copy
from ovperc.datasets.io import Dataset, LabeledImage, Split, load_dataset
from ovperc.image import DEFAULT_MAX_PIXELS, ImageError
from ovperc.labeling.engine import is_fatal
from ovperc.labeling.lock import dataset_lock
from ovperc.labeling.manifest import Manifest, check_empty, discard, read_stored
from ovperc.labeling.report import Report
from ovperc.labeling.scan import sort_key
from ovperc.labeling.writers import DatasetWriter, ImageItem, ImageMode, make_writer
from ovperc.prefetch import decode_images

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.stages.base import Segmenter

logger = logging.getLogger(__name__)


@dataclass
class _SplitOut:
    """Where one input split goes: its writer and the output names of its images."""

    split: Split
    writer: DatasetWriter

    def stem(self, item: LabeledImage) -> str:
        return item.path.relative_to(self.split.images_dir).with_suffix("").as_posix()


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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    src, dst = Path(dataset).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"--out {out} must not be the dataset folder {dataset} or inside it")
    ds = load_dataset(dataset, fmt)
    outs = {split: _SplitOut(split, make_writer(
        ds.format, Path(out) / _split_base(split).relative_to(ds.root), masks=True,
        mask_png=mask_png, images=images, durable=durable)) for split in ds.splits}
    run_signature = {"task": "segment", "source": str(src), "format": ds.format,
                     "classes": ds.classes, "images": images, "mask_png": bool(mask_png),
                     **(signature or {})}

    start = time.perf_counter()
    if not overwrite:
        check_empty(Path(out))
    with dataset_lock(out):
        manifest = _open_manifest(Path(out), run_signature, ds.classes, overwrite)
        return _segment_all(segmenter, ds, outs, manifest, dataset=dataset, out=Path(out),
                            batch_size=batch_size, decode_workers=decode_workers,
                            max_pixels=max_pixels, progress=progress, durable=durable, start=start)


def _segment_all(segmenter: Segmenter, ds: Dataset, outs: dict[Split, _SplitOut], manifest: Manifest,
                 *, dataset: str | os.PathLike, out: Path, batch_size: int, decode_workers: int,
                 max_pixels: int, progress: bool, durable: bool, start: float) -> Report:
    report = Report(source=str(dataset), out=str(out), format=ds.format)
    load = getattr(segmenter, "load", None)
    if callable(load):
        load()  # a model that cannot load stops the run before its first image
    try:
        _run(segmenter, ds, outs, manifest, report, batch_size=batch_size,
             decode_workers=decode_workers, max_pixels=max_pixels, progress=progress)
    except KeyboardInterrupt:
        report.interrupted = True
        logger.warning("interrupted; rerun the same command to resume")
    except Exception as error:
        report.error = f"{type(error).__name__}: {error}"
        raise
    finally:
        t0 = time.perf_counter()
        _finalize(ds, outs, manifest, Path(out), durable=durable)
        report.add_time("write", time.perf_counter() - t0)
        report.images_done = len(manifest.done)
        total: Counter[str] = Counter()
        for record in manifest.done.values():
            total.update(record.get("counts", {}))
        report.detections_per_class = {n: total[n] for n in ds.classes if total[n]}
        report.classes = list(ds.classes)
        report.elapsed_s = time.perf_counter() - start
        if manifest.claim(out / "report.json"):
            report.save(out / "report.json")
    return report


def _open_manifest(out: Path, signature: dict[str, Any], classes: list[str],
                   overwrite: bool) -> Manifest:
    if overwrite and out.exists():
        stored = read_stored(out)
        if stored is not None and stored.get("signature") != json.loads(json.dumps(signature)):
            discard(out)  # exactly the files the previous run recorded
    return Manifest.open(out, signature, classes=classes, require_empty=not overwrite)


def _run(segmenter: Segmenter, ds: Dataset, outs: dict[Split, _SplitOut], manifest: Manifest,
         report: Report, *, batch_size: int, decode_workers: int, max_pixels: int,
         progress: bool) -> None:
    from tqdm.auto import tqdm

    items = list(ds)
    report.images_found = len(items)
    todo = [item for item in items if item.key not in manifest.done]
    report.already_done = len(items) - len(todo)
    bar = tqdm(total=len(todo), unit="img", desc="segmenting", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    guard = _Guard()
    try:
        batch: list[tuple[LabeledImage, np.ndarray]] = []
        for item, decoded in _decoded(todo, report, decode_workers, max_pixels, batch_size):
            if isinstance(decoded, ImageError):
                report.skip(item.key, decoded.reason)
                bar.update(1)
                continue
            batch.append((item, decoded))
            if len(batch) == batch_size:
                _process(guard, segmenter, batch, outs, manifest, report)
                bar.update(len(batch))
                batch = []
        if batch:
            _process(guard, segmenter, batch, outs, manifest, report)
            bar.update(len(batch))
    finally:
        bar.close()


def _decoded(todo: list[LabeledImage], report: Report, workers: int, max_pixels: int,
             batch_size: int) -> Iterator[tuple[LabeledImage, np.ndarray | ImageError]]:
    wait = time.perf_counter()
    stream = decode_images((item.path for item in todo), workers=workers,
                           lookahead=max(2 * batch_size, 4), max_pixels=max_pixels)
    for item, (_, decoded) in zip(todo, stream):
        report.add_time("decode", time.perf_counter() - wait)
        yield item, decoded
        wait = time.perf_counter()


class _Guard:
    """Runs the segmenter on a batch; a batch that fails is retried image by image, so one
    bad image is skipped alone. Only a setup error stops the run (see ``is_fatal``)."""

    def segment(self, segmenter: Segmenter, arrays: list[np.ndarray],
                dets: list[sv.Detections]) -> list[sv.Detections | Exception]:
        """Masks for a batch; on failure, retry image by image so a bad image is skipped alone."""
        try:
            return list(segmenter.segment(arrays, dets))
        except Exception as error:
            if is_fatal(error, len(arrays)):
                raise
            if len(arrays) > 1:
                logger.warning("segmenter failed on a batch (%s); retrying one by one", error)
                return [r for a, d in zip(arrays, dets) for r in self.segment(segmenter, [a], [d])]
            return [error]


def _process(guard: _Guard, segmenter: Segmenter, batch: list[tuple[LabeledImage, np.ndarray]],
             outs: dict[Split, _SplitOut], manifest: Manifest, report: Report) -> None:
    arrays = [array for _, array in batch]
    boxes = []
    for (item, array) in batch:
        det = item.detections
        height, width = array.shape[:2]
        det.xyxy = np.clip(np.asarray(det.xyxy, dtype=np.float64), 0, [width, height, width, height])
        boxes.append(det)
    t0 = time.perf_counter()
    with_boxes = [i for i, d in enumerate(boxes) if len(d)]
    segmented: dict[int, Any] = {}
    if with_boxes:
        results = guard.segment(segmenter, [arrays[i] for i in with_boxes], [boxes[i] for i in with_boxes])
        segmented = dict(zip(with_boxes, results))
    report.add_time("segment", time.perf_counter() - t0)

    t0 = time.perf_counter()
    records = []
    for index, (item, array) in enumerate(batch):
        det = boxes[index]
        height, width = array.shape[:2]
        result = segmented.get(index)
        if isinstance(result, Exception):
            report.skip(item.key, f"segmenter failed ({type(result).__name__}: {result})")
            continue
        out_det = det[:] if len(det) else det
        if result is not None:
            masks = np.asarray(result.mask, dtype=bool)
            if masks.shape != (len(det), height, width):
                report.skip(item.key, f"segmenter returned masks of shape {masks.shape} for "
                                      f"{len(det)} boxes on a {width}x{height} image")
                continue
            out_det.mask = clip_to_boxes(masks, det.xyxy)
        else:
            out_det.mask = np.zeros((0, height, width), dtype=bool)
        target = outs[item.split]
        stem = target.stem(item)
        image = ImageItem(item.path, stem, item.path.suffix, width, height)
        paths = target.writer.paths(image)
        foreign = next((p for p in paths if p.exists() or p.is_symlink()), None)
        if foreign is not None:
            report.skip(item.key, f"not written: {foreign} is in the way and ovperc did not write it")
            continue
        files = [_relative(manifest.root, p) for p in paths]
        manifest.begin([{"rel": item.key, "files": files}])
        target.writer.write(image, out_det, manifest.classes)
        names = [str(n) for n in det.data.get("class_name", [])]
        records.append({"rel": item.key, "stem": stem, "counts": dict(Counter(names)), "files": files})
    manifest.record(records)
    report.add_time("write", time.perf_counter() - t0)
    report.done_this_run += len(records)


def _finalize(ds: Dataset, outs: dict[Split, _SplitOut], manifest: Manifest, out: Path, *,
              durable: bool) -> None:
    """Dataset-wide files: YOLO keeps its own ``data.yaml``; COCO json / VOC labels.txt per split."""
    if ds.format == "yolo":
        for split in ds.splits:
            assert split.data_yaml is not None
            copy = out / split.data_yaml.relative_to(ds.root)
            if manifest.claim(copy):
                atomic_copy(split.data_yaml, copy, durable=durable)
        return
    for split, target in outs.items():
        if not all(manifest.claim(p) for p in target.writer.dataset_files()):
            logger.warning("not writing %s: a file ovperc did not write is in the way",
                           target.writer.dataset_files())
            continue
        records = [r for r in manifest.done.values() if _key_in_split(str(r["rel"]), split)]
        records.sort(key=lambda r: sort_key(str(r["rel"])))
        target.writer.finalize(manifest.classes, [str(r["stem"]) for r in records])


def _relative(root: Path, path: Path) -> str:
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()


def _key_in_split(key: str, split: Split) -> bool:
    return key.startswith(f"{split.name}/") if split.name else True
