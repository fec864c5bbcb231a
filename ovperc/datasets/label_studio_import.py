"""Bring labels reviewed in Label Studio back into the dataset they were exported from.

``import_label_studio(export, dataset)`` reads a Label Studio JSON export and, image by
image, replaces the labels ``ovperc label`` wrote with the reviewed ones, in the dataset's
own format (YOLO, COCO or VOC, as its manifest records). Only images with a submitted
annotation in the export are touched; every other image keeps its labels byte for byte.

Safety, as everywhere in ovperc: only a dataset an ovperc run wrote (it has a manifest) is
written to, and only files that manifest recorded are replaced. Each image's new files are
recorded as begun before they are written and recorded as done (marked ``reviewed``) after,
so the dataset stays resumable, ``--overwrite`` removes exactly what ovperc wrote, and a
later ``ovperc label`` resume never redoes a reviewed image. A task that cannot be imported
is skipped with the reason in the report; the other tasks still are.

Reviewed labels carry no confidence: YOLO's ``scores/<stem>.txt`` of a reviewed image is
removed, COCO annotations have no ``score`` and VOC objects no ``<confidence>``.

Example:
    >>> report = import_label_studio("export.json", "dataset/")  # doctest: +SKIP
    >>> report.replaced  # doctest: +SKIP
    ['photos/a.jpg']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ovperc.datasets.label_studio_tasks import (
    TaskError,
    image_reference,
    reference_parts,
    region_names,
    reviewed_annotation,
    task_label,
    task_objects,
)
from ovperc.labeling.manifest import Manifest, read_stored

logger = logging.getLogger(__name__)


class LabelStudioImportError(ValueError):
    """The export or the dataset cannot be imported at all (nothing was written)."""


class UnknownClassesError(LabelStudioImportError):
    """The reviewed labels use class names the dataset does not have."""


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        export: the export file.
        dataset: the dataset folder.
        format: the dataset's format.
        tasks: tasks in the export.
        replaced: images (source-relative paths) whose labels were replaced.
        unchanged: images whose reviewed labels were already imported (not rewritten).
        not_reviewed: tasks without a submitted annotation (their images keep their labels).
        skipped: ``(task, reason)`` for each task that could not be imported.
        added_classes: class names appended to the dataset's classes.
        ignored_regions: regions not imported, by kind.
        notes: anything else worth knowing.
    """

    export: str
    dataset: str
    format: str = ""
    tasks: int = 0
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_reviewed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    added_classes: list[str] = field(default_factory=list)
    ignored_regions: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: every reviewed task imported; 1: some tasks were skipped."""
        return 1 if self.skipped else 0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        data = asdict(self)
        data["skipped"] = [{"task": t, "reason": r} for t, r in self.skipped]
        return data

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"{self.tasks} tasks: {len(self.replaced)} images replaced by their reviewed labels, "
                 f"{len(self.unchanged)} already up to date, {len(self.not_reviewed)} not reviewed, "
                 f"{len(self.skipped)} skipped"]
        if self.added_classes:
            lines.append(f"classes added: {', '.join(self.added_classes)}")
        if self.ignored_regions:
            lines.append("regions not imported: " + ", ".join(f"{k or 'untyped'} {v}" for k, v in
                                                               sorted(self.ignored_regions.items())))
        lines += [f"skipped {task}: {reason}" for task, reason in self.skipped]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def read_export(path: str | os.PathLike) -> list[Any]:
    """The tasks of a Label Studio JSON export (``Export -> JSON``).

    Raises:
        LabelStudioImportError: the file is missing, not JSON, or not a list of tasks.

    Example:
        >>> len(read_export("export.json"))  # doctest: +SKIP
        120
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise LabelStudioImportError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise LabelStudioImportError(f"{path} is not valid JSON ({error}); give the file Label "
                                     "Studio's Export -> JSON writes") from None
    if isinstance(data, dict) and "data" in data:
        data = [data]  # one task
    if not isinstance(data, list):
        raise LabelStudioImportError(
            f"{path} holds a JSON {type(data).__name__}, not a list of tasks; give the file Label "
            "Studio's Export -> JSON writes (not JSON-MIN or CSV)")
    return data


@dataclass
class _Target:
    """One image of the dataset that a task may name."""

    rel: str
    record: dict[str, Any]
    image: str  # the image's path in the dataset (``images/train/a.jpg``)
    key: str  # the image's path under ``images/`` (the export's ``meta.key``)


class _ImageIndex:
    """Finds the dataset image a task names (see :func:`match`)."""

    def __init__(self, targets: Sequence[_Target]) -> None:
        self.targets = list(targets)
        self.by_key = {t.key: t for t in targets}
        self.by_name: dict[str, list[_Target]] = {}
        for target in targets:
            for name in {PurePosixPath(target.image).name, PurePosixPath(target.rel).name}:
                self.by_name.setdefault(name, []).append(target)

    def match(self, task: Mapping[str, Any]) -> _Target:
        """The image a task shows: by ``meta.key`` (what ``ovperc export`` writes), else the
        longest trailing run of path components its image reference shares with an image's
        path in the dataset or in the labelled folder, else its file name.

        Raises:
            TaskError: no image, or several equally good ones, match.
        """
        meta = task.get("meta")
        key = meta.get("key") if isinstance(meta, Mapping) else None
        reference = image_reference(task)
        parts = reference_parts(reference)
        if isinstance(key, str) and key in self.by_key:
            target = self.by_key[key]
            if not parts or parts[-1] in (PurePosixPath(target.image).name, PurePosixPath(target.rel).name):
                return target
        if not parts:
            raise TaskError(f"its image {reference!r} names no file")
        candidates = self.by_name.get(parts[-1], [])
        scored = sorted(((max(_shared(parts, t.image), _shared(parts, t.rel)), t) for t in candidates),
                        key=lambda s: -s[0])
        if not scored:
            raise TaskError(f"its image {reference!r} is not an image of the dataset")
        best = [t for score, t in scored if score == scored[0][0]]
        if len(best) > 1:
            raise TaskError(f"its image {reference!r} could be any of {', '.join(t.image for t in best[:4])}")
        return best[0]


def _shared(parts: Sequence[str], path: str) -> int:
    """How many trailing path components ``parts`` and ``path`` share."""
    other = PurePosixPath(path).parts
    n = 0
    while n < min(len(parts), len(other)) and parts[-1 - n] == other[-1 - n]:
        n += 1
    return n


@dataclass
class _Review:
    """One task to apply: the image it replaces and its reviewed annotation."""

    task: str
    target: _Target
    annotation: dict[str, Any]
    names: list[str]


def import_label_studio(
    export: str | os.PathLike,
    dataset: str | os.PathLike,
    *,
    add_classes: bool = False,
    durable: bool = True,
) -> ImportReport:
    """Replace the auto labels of the reviewed images of ``dataset`` with their reviews.

    Args:
        export: a Label Studio JSON export of tasks made by ``ovperc export`` from this
            dataset (or any tasks whose images are the dataset's images: ``data.image`` is
            matched by path, ``/data/local-files/?d=...``, ``/data/upload/...`` file name).
        dataset: the dataset folder ``ovperc label`` wrote.
        add_classes: append class names the dataset does not have (ids never move);
            without it such names are an error before anything is written.
        durable: ``fsync`` every file before it is renamed into place.

    Returns:
        The :class:`ImportReport`.

    Raises:
        LabelStudioImportError: the export is not a JSON list of tasks, or the dataset was not written
            by ovperc (no manifest), or it uses unknown classes (:class:`UnknownClassesError`).
        DatasetBusyError: another ovperc run is writing the dataset.

    Example:
        >>> import_label_studio("export.json", "dataset/", add_classes=True).summary()  # doctest: +SKIP
    """
    from ovperc.labeling.lock import dataset_lock

    root = Path(dataset)
    tasks = read_export(export)
    stored = read_stored(root) if root.is_dir() else None
    if stored is None:
        raise LabelStudioImportError(
            f"{root} holds no ovperc manifest (.ovperc/manifest.json): reviewed labels are imported "
            "only into a dataset `ovperc label` wrote, so that no file ovperc did not write is ever "
            "replaced")
    signature = dict(stored.get("signature") or {})
    report = ImportReport(export=str(export), dataset=str(root), format=str(signature.get("format", "")),
                          tasks=len(tasks))
    with dataset_lock(root):
        manifest = Manifest.open(root, signature, require_empty=False)
        writer = _writer(root, signature, durable)
        existing = signature.get("existing")
        if isinstance(existing, Mapping) and existing.get("mode") in ("keep", "merge"):
            from ovperc.labeling.existing import open_existing

            # the dataset's own data.yaml / annotations.json are extended, never replaced
            open_existing(writer, str(existing["mode"]))
        reviews = _plan(tasks, manifest, writer, report)
        unknown = [n for n in dict.fromkeys(n for r in reviews for n in r.names) if n not in manifest.classes]
        if unknown and not add_classes:
            raise UnknownClassesError(
                f"the reviewed labels use classes the dataset does not have: {', '.join(unknown)} "
                f"(its classes: {', '.join(manifest.classes) or 'none'}); fix them in Label Studio, or "
                "pass --add-classes to append them (existing class ids do not move)")
        changed = False
        if unknown:
            manifest.set_classes([*manifest.classes, *unknown])
            report.added_classes = unknown
            changed = True
        for review in reviews:
            try:
                outcome = _apply(review, manifest, writer, signature, report)
            except TaskError as error:
                report.skipped.append((review.task, str(error)))
                continue
            (report.replaced if outcome else report.unchanged).append(review.target.rel)
            changed |= outcome
        if changed:
            from ovperc.labeling.sink import DatasetSink

            problem = DatasetSink(writer, manifest).finalize()
            if problem is not None:
                report.notes.append(problem)
    logger.info("imported %d reviewed images into %s", len(report.replaced), root)
    return report


def _writer(root: Path, signature: Mapping[str, Any], durable: bool) -> Any:
    from ovperc.labeling.writers import make_writer

    return make_writer(str(signature.get("format", "")), root, masks=bool(signature.get("masks")),
                       mask_png=bool(signature.get("mask_png")), images=signature.get("images", "copy"),
                       durable=durable, val_from=signature.get("val_from"))


def _item(target: _Target, width: int, height: int) -> Any:
    from ovperc.labeling.writers import ImageItem

    record = target.record
    return ImageItem(Path(target.rel), str(record["stem"]), PurePosixPath(target.rel).suffix, width,
                     height, str(record.get("split", "")))


def _plan(tasks: Sequence[Any], manifest: Manifest, writer: Any, report: ImportReport) -> list[_Review]:
    """Match every task to its image and pick its reviewed annotation (no geometry yet)."""
    targets = []
    for rel, record in manifest.done.items():
        item = _item(_Target(rel, record, "", ""), 1, 1)
        image = writer.image_path(item).relative_to(writer.out).as_posix()
        targets.append(_Target(rel, record, image, item.file_name))
    index = _ImageIndex(targets)
    reviews: list[_Review] = []
    for position, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            report.skipped.append((f"task #{position + 1}",
                                   f"it is a JSON {type(task).__name__}, not a task"))
            continue
        label = task_label(task, position)
        try:
            annotation = reviewed_annotation(task)
            if annotation is None:
                report.not_reviewed.append(label)
                continue
            target = index.match(task)
            names = region_names(annotation["result"])
        except TaskError as error:
            report.skipped.append((label, str(error)))
            continue
        reviews.append(_Review(label, target, annotation, names))
    seen = Counter(r.target.rel for r in reviews)
    for review in [r for r in reviews if seen[r.target.rel] > 1]:
        others = [r.task for r in reviews if r.target.rel == review.target.rel and r is not review]
        report.skipped.append((review.task, f"its image {review.target.image} is also in "
                                            f"{', '.join(others)}; keep one task per image"))
    return [r for r in reviews if seen[r.target.rel] == 1]


def _image_size(root: Path, target: _Target, result: Sequence[Any]) -> tuple[int, int]:
    from ovperc.datasets.label_studio import image_size

    path = root / target.image
    if path.exists():
        try:
            return image_size(path)
        except OSError as error:
            raise TaskError(f"its image {path} cannot be read ({error})") from None
    for region in result:
        if isinstance(region, Mapping) and region.get("original_width") and region.get("original_height"):
            return int(region["original_width"]), int(region["original_height"])
    raise TaskError(f"the size of {target.image} is unknown: the image is not in the dataset and the "
                    "annotation has no regions giving it")


def _apply(review: _Review, manifest: Manifest, writer: Any, signature: Mapping[str, Any],
           report: ImportReport) -> bool:
    """Replace one image's label files with its review; ``False`` when already imported.

    Raises:
        TaskError: the review cannot be applied (nothing of this image was written).
    """
    root = manifest.root
    target, result = review.target, review.annotation["result"]
    width, height = _image_size(root, target, result)
    objects, notes = task_objects(result, width, height, report.ignored_regions)
    report.notes.extend(f"{review.task}: {note}" for note in notes)
    item = _item(target, width, height)
    contents = _contents(writer, item, objects, manifest.classes, masks=bool(signature.get("masks")))
    old_files = list(target.record.get("files", ()))
    for path in contents:
        rel = path.relative_to(root).as_posix()
        if (path.exists() or path.is_symlink()) and rel not in old_files:
            raise TaskError(f"not imported: {path} is in the way and ovperc did not write it")
    marker = {"tool": "label-studio", "task": review.task, "annotation": review.annotation.get("id"),
              "updated_at": review.annotation.get("updated_at") or review.annotation.get("created_at"),
              "digest": hashlib.sha1(json.dumps(result, sort_keys=True).encode()).hexdigest()[:16]}
    if target.record.get("reviewed") == marker and all(_holds(p, data) for p, data in contents.items()):
        return False
    rels = {p: p.relative_to(root).as_posix() for p in contents}
    written = [rels[p] for p, data in contents.items() if data is not None]
    manifest.begin([{"rel": target.rel, "files": written}])
    from ovperc.atomic import atomic_write_bytes

    for path, data in contents.items():
        if data is not None:
            atomic_write_bytes(path, data, durable=writer.durable)
    for path, data in contents.items():
        if data is None:
            path.unlink(missing_ok=True)  # recorded by ovperc (checked above)
    removed = {rels[p] for p, data in contents.items() if data is None}
    files = [f for f in old_files if f not in removed] + [f for f in written if f not in old_files]
    names = [o.name for o in objects]
    record = {**target.record, "counts": dict(Counter(names)), "classes": list(dict.fromkeys(names)),
              "files": files, "reviewed": marker}
    manifest.record([record])
    return True


def _holds(path: Path, data: bytes | None) -> bool:
    if data is None:
        return not (path.exists() or path.is_symlink())
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _contents(writer: Any, item: Any, objects: Sequence[Any], classes: list[str], *,
              masks: bool) -> dict[Path, bytes | None]:
    """The bytes of every annotation file of one image (``None``: the file is removed)."""
    import supervision as sv

    from ovperc.labeling.formats import coco_annotations, voc_xml, yolo_lines
    from ovperc.masks import encode_instance_png

    hw = (item.height, item.width)
    n = len(objects)
    det = sv.Detections(xyxy=np.array([o.xyxy for o in objects], dtype=np.float64).reshape(n, 4),
                        class_id=np.array([classes.index(o.name) for o in objects], dtype=int))
    has_mask = [o.mask is not None for o in objects]
    if (masks or writer.wants_png) and any(has_mask):
        det.mask = np.stack([o.mask if o.mask is not None else np.zeros(hw, dtype=bool) for o in objects])
    out: dict[Path, bytes | None] = {}
    if writer.wants_png:
        stem = item.stem if writer.format == "voc" else item.name
        empty = np.zeros((0, *hw), dtype=bool)
        out[writer.mask_path(stem)] = encode_instance_png(det.mask if det.mask is not None else empty, hw)
    if writer.format == "yolo":
        lines = yolo_lines(det, hw, masks=masks)
        out[writer.label_path(item.name)] = "".join(line + "\n" for line in lines).encode()
        out[writer.scores_path(item.name)] = None  # reviewed labels have no confidence
    elif writer.format == "coco":
        annotations = coco_annotations(det, masks=masks and det.mask is not None)
        for annotation, mask_given, box in zip(annotations, has_mask, det.xyxy):
            if masks and not mask_given:  # a box drawn without an outline
                annotation["segmentation"] = []
                annotation["area"] = round(float((box[2] - box[0]) * (box[3] - box[1])), 2)
        part = {"image": {"file_name": item.file_name, "width": item.width, "height": item.height},
                "annotations": annotations}
        text = json.dumps(part, ensure_ascii=False, separators=(",", ":")) + "\n"
        out[writer.part_path(item.name)] = text.encode()
    else:
        out[writer.xml_path(item.stem)] = voc_xml(item, det, classes).encode()
    return out
