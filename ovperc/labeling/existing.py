"""Labelling into a dataset that already holds labels ovperc did not write (``--existing``).

A dataset labelled by hand (or by another tool) in ovperc's layout: YOLO ``labels/*.txt``
with ``data.yaml``, COCO ``annotations.json``, or VOC ``annotations/*.xml``. An image *has
labels* when its label file is there (YOLO, VOC) or ``annotations.json`` lists it (COCO),
and no ovperc run wrote them. What ``ovperc label --existing MODE`` does with such an image:

* ``keep``: it is not labelled and its labels stay byte for byte; they are part of the
  dataset ovperc writes: their classes keep their ids (new classes are appended),
  ``data.yaml`` / ``labels.txt`` / ``annotations.json`` are extended, not replaced.
* ``skip``: it is not labelled, and ovperc changes no file it did not write at all (a
  ``data.yaml`` or ``labels.txt`` that is the dataset's own is left as it is; a COCO
  dataset, whose one ``annotations.json`` would have to change, is refused).
* ``merge``: it is labelled, and only the new boxes that overlap none of its boxes by more
  than ``merge_iou`` (any class: a place someone labelled is theirs) are added; its boxes
  are never changed or removed (YOLO lines and VOC objects are appended to the file as it
  is, COCO annotations get new ids after the existing ones).

Every file ovperc changes that it did not write is adopted first
(:meth:`~ovperc.labeling.manifest.Manifest.adopt`): its original bytes are kept in
``.ovperc/originals/`` and come back wherever ovperc would remove the file (``--overwrite``,
a changed source image, a run killed while writing it). Class names are read from the
originals, so a resumed run sees the dataset's classes as they were before it started.

Example:
    >>> existing = open_existing(make_writer("yolo", "dataset/"), "merge")  # doctest: +SKIP
    >>> existing.classes  # doctest: +SKIP
    ['person', 'helmet']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import numpy as np

from ovperc.labeling.hand_labels import (
    box_iou,
    coco_classes,
    coco_image_name,
    voc_boxes,
    voc_insert,
    yolo_boxes,
)
from ovperc.labeling.manifest import STATE_DIR, Manifest, read_stored, written_files
from ovperc.labeling.scan import ScanEntry
from ovperc.labeling.state_files import relative
from ovperc.labeling.writers import DatasetWriter, ImageItem

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

#: what ``--existing`` accepts.
EXISTING_MODES: tuple[str, ...] = ("keep", "skip", "merge")

#: the IoU above which a new box counts as one an image already has (``--merge-iou``).
DEFAULT_MERGE_IOU = 0.5


class ExistingLabels:
    """The labels a dataset already holds, and what a run does with them; use :func:`open_existing`.

    Attributes:
        mode: ``keep``, ``skip`` or ``merge``.
        merge_iou: with ``merge``, a new box overlapping an existing one above this is dropped.
        classes: the dataset's classes, by id, as its own files name them.
        writer: the run's writer (where each image's files go).
        merged: ``[images, boxes they had, boxes added]`` by this run (``merge``).

    Example:
        >>> existing = open_existing(make_writer("yolo", "hand/"), "keep")  # doctest: +SKIP
        >>> todo, held = existing.partition(entries, stems)  # doctest: +SKIP
    """

    def __init__(self, writer: DatasetWriter, mode: str, merge_iou: float, classes: list[str],
                 originals: Mapping[str, str], coco: dict | None) -> None:
        self.writer = writer
        self.mode = mode
        self.merge_iou = merge_iou
        self.classes = classes
        self.coco = coco
        self._originals = dict(originals)
        self._manifest: Manifest | None = None
        self._coco_images: dict[str, list[dict]] = {}
        if coco is not None:
            ids = {i.get("id"): coco_image_name(str(i.get("file_name", ""))) for i in coco["images"]}
            self._coco_images = {name: [] for name in ids.values()}
            for annotation in coco["annotations"]:
                name = ids.get(annotation.get("image_id"))
                if name is not None:
                    self._coco_images[name].append(annotation)
        self.merged = [0, 0, 0]

    # ------------------------------------------------------------------ which images
    def bind(self, manifest: Manifest) -> None:
        """Use the run's manifest to tell files ovperc wrote from the dataset's own."""
        self._manifest = manifest

    def partition(self, entries: Sequence[ScanEntry], stems: Mapping[str, str]
                  ) -> tuple[list[ScanEntry], list[str]]:
        """The entries this run labels, and those that keep their labels (``keep``/``skip``).

        Example:
            >>> todo, held = existing.partition(entries, stems)  # doctest: +SKIP
        """
        if self.mode == "merge":
            return list(entries), []
        held = [e.rel for e in entries
                if self.labelled(ImageItem(e.path, stems[e.rel], e.suffix, 1, 1, e.split))]
        gone = set(held)
        return [e for e in entries if e.rel not in gone], held

    def notes(self, held: Sequence[str]) -> list[str]:
        """What the report says about the dataset's own labels after a run."""
        out = []
        if held:
            shown = ", ".join(held[:5]) + (" ..." if len(held) > 5 else "")
            how = ("kept as they are, as part of the dataset (its class list and COCO file keep them)"
                   if self.mode == "keep" else "left out of this run")
            out.append(f"{len(held)} images already have labels that ovperc did not write: not labelled, "
                       f"{how} (--existing {self.mode}): {shown}")
        images, had, added = self.merged
        if images:
            out.append(f"{images} images with their own labels ({had} boxes) got {added} new boxes that "
                       f"overlap none of theirs above IoU {self.merge_iou} (--existing merge)")
        return out

    def label_file(self, item: ImageItem) -> Path | None:
        """The per-image file that holds an image's labels (``None`` for COCO: one json)."""
        name = self.writer._name(item)
        if self.writer.format == "yolo":
            return self.writer.label_path(name)  # type: ignore[attr-defined]
        if self.writer.format == "voc":
            return self.writer.xml_path(name)  # type: ignore[attr-defined]
        return None

    def left_alone(self, item: ImageItem) -> list[Path]:
        """Files the writer writes for an image that a merge does not: YOLO's scores (the
        image's own boxes have no confidence, so the file could not match its lines)."""
        if self.writer.format == "yolo":
            return [self.writer.scores_path(self.writer._name(item))]  # type: ignore[attr-defined]
        return []

    def labelled(self, item: ImageItem) -> bool:
        """Whether the dataset holds labels of this image that no ovperc run wrote."""
        if self.coco is not None or self.writer.format == "coco":
            return item.file_name in self._coco_images
        path = self.label_file(item)
        assert path is not None
        originals = self._manifest.originals if self._manifest is not None else self._originals
        rel = relative(self.writer.out, path)
        if rel in originals:
            return True
        owned = self._manifest is not None and self._manifest.owns(path)
        return path.is_file() and not owned

    # ------------------------------------------------------------------ merge
    def boxes(self, item: ImageItem) -> np.ndarray:
        """The boxes an image already has, ``(N, 4)`` ``xyxy`` pixels of a ``width x height`` image.

        Raises:
            ValueError: its label file cannot be read (the image is then left as it is).
        """
        if self.writer.format == "coco":
            found = [a.get("bbox") for a in self._coco_images.get(item.file_name, [])]
            try:
                xywh = np.array([[float(v) for v in box] for box in found if box], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"annotations.json has a bbox of {item.file_name} that is not 4 "
                                 "numbers; its labels are left as they are") from None
            xywh = xywh.reshape(-1, 4)
            return np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])
        path = self.label_file(item)
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} cannot be read ({error}); its labels are left as they are") from None
        if self.writer.format == "yolo":
            return yolo_boxes(text, (item.height, item.width), path)
        return voc_boxes(text, path)

    def new_only(self, xyxy: np.ndarray, existing: np.ndarray) -> np.ndarray:
        """Which boxes of ``xyxy`` overlap no ``existing`` box above :attr:`merge_iou` (a mask).

        Example:
            >>> existing.new_only(np.array([[0., 0., 9., 9.]]), np.zeros((0, 4)))  # doctest: +SKIP
            array([ True])
        """
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        if len(xyxy) == 0 or len(existing) == 0:
            return np.ones(len(xyxy), dtype=bool)
        return box_iou(xyxy, existing).max(axis=1) <= self.merge_iou

    def write_merged(self, item: ImageItem, detections: sv.Detections, classes: list[str]) -> None:
        """Add ``detections`` (the new boxes only) to an image's own labels, atomically.

        YOLO lines and VOC objects are appended to the file's text as it is, so every byte of
        the image's own labels stays; COCO's new annotations go to the image's part and join
        ``annotations.json`` when it is written.
        """
        from ovperc.atomic import atomic_write_text
        from ovperc.labeling.formats import yolo_lines

        writer = self.writer
        path = self.label_file(item)
        if path is None:  # COCO: the part holds the new annotations only
            writer._write_annotations(item, detections, classes)
            return
        text = path.read_text(encoding="utf-8")
        if writer.format == "yolo":
            lines = yolo_lines(detections, (item.height, item.width), masks=writer.masks)
            if lines and text and not text.endswith("\n"):
                text += "\n"
            text += "".join(line + "\n" for line in lines)
        else:
            text = voc_insert(text, detections, classes, path)
        atomic_write_text(path, text, durable=writer.durable)


def open_existing(writer: DatasetWriter, mode: str, *, merge_iou: float = DEFAULT_MERGE_IOU,
                  classes: Sequence[str] | None = None) -> ExistingLabels:
    """Read what the dataset in ``writer.out`` already holds, for a run with ``--existing mode``.

    Args:
        writer: the run's writer (its format and folder).
        mode: ``keep``, ``skip`` or ``merge``.
        merge_iou: with ``merge``: new boxes overlapping an existing one above this are dropped.
        classes: the run's classes (``None``: tags decide); with ``skip`` every one must be
            among the dataset's when its class list is a file ovperc may not change.

    Raises:
        ValueError: a bad mode or IoU, or the dataset's labels cannot be read for this format
            (its class list is unreadable or missing, it holds another format's labels, ...).

    Example:
        >>> open_existing(make_writer("voc", "dataset/"), "keep").classes  # doctest: +SKIP
        ['cat', 'dog']
    """
    if mode not in EXISTING_MODES:
        raise ValueError(f"--existing must be one of {', '.join(EXISTING_MODES)}, got {mode!r}")
    if not 0.0 < merge_iou <= 1.0:
        raise ValueError(f"--merge-iou must be above 0 and at most 1, got {merge_iou}")
    out = writer.out
    stored = read_stored(out) if out.is_dir() else None
    originals = dict((stored or {}).get("originals") or {})
    owned = written_files(out) if stored is not None else set()

    def source(rel: str) -> Path | None:
        """Where the dataset's own version of ``rel`` is: its original, itself, or none."""
        if rel in originals and (out / originals[rel]).is_file():
            return out / originals[rel]
        path = out / rel  # an original not copied yet: the file was never changed
        if rel in originals:
            return path if path.is_file() else None
        return path if path.is_file() and rel not in owned else None

    _check_format(writer.format, out, owned)
    coco = None
    if writer.format == "yolo":
        found = _yolo_classes(source("data.yaml"), out)
        names, base = found if found is not None else ([], None)
        labels = out / "labels"
        if base is None and labels.is_dir() and any(
                p.suffix == ".txt" and relative(out, p) not in owned for p in labels.rglob("*")):
            raise ValueError(f"{labels} holds label files but there is no {out / 'data.yaml'} naming "
                             "their class ids; add one (names: [...]) so that ovperc keeps the ids")
        if mode != "skip":
            writer.base = base
        elif base is not None:
            missing = [c for c in (classes or []) if c not in names]
            if classes is None or missing:
                raise ValueError(
                    f"--existing skip never changes {out / 'data.yaml'}, so every class must already "
                    f"be in it ({', '.join(names)}): " + (f"{', '.join(missing)} is not" if missing else
                                                          "give --classes from it") +
                    "; add them to data.yaml, or use --existing keep (it appends them)")
    elif writer.format == "coco":
        coco_path = source("annotations.json")
        coco = None if coco_path is None else _coco(coco_path, out)
        if coco is not None and mode == "skip":
            raise ValueError(
                f"{out / 'annotations.json'} holds the dataset's own labels, and COCO keeps every "
                "image's labels in that one file: --existing skip never changes it, so the new labels "
                "would be written nowhere; use --existing keep (it adds them, the original is kept in "
                f"{STATE_DIR}/originals) or merge")
        names = [] if coco is None else coco_classes(coco)
        if mode != "skip":
            writer.base = coco
    else:
        names = _voc_classes(out, source, owned)
    return ExistingLabels(writer, mode, merge_iou, names, originals, coco)


# ---------------------------------------------------------------------- reading
def _check_format(fmt: str, out: Path, owned: set[str]) -> None:
    """Refuse a run whose format would not see the dataset's own labels."""
    found = {
        "yolo": [p for p in ("data.yaml", "labels") if (out / p).exists() and p not in owned],
        "coco": [p for p in ("annotations.json",) if (out / p).is_file() and p not in owned],
        "voc": [p for p in ("annotations", "labels.txt") if (out / p).exists() and p not in owned],
    }
    others = {f: paths for f, paths in found.items() if f != fmt and paths}
    if others and not found[fmt]:
        other, paths = next(iter(others.items()))
        raise ValueError(f"{out} holds {other.upper()} labels ({', '.join(paths)}), not {fmt.upper()}: "
                         f"--existing reads the labels of --format {fmt}; pass --format {other}")


def _yolo_classes(path: Path | None, out: Path) -> tuple[list[str], dict] | None:
    import yaml

    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{out / 'data.yaml'} cannot be read ({error})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            names = None
    if not isinstance(names, list):
        raise ValueError(f"{out / 'data.yaml'} has no 'names' list of classes (names: [cat, dog] or "
                         "names: {0: cat, 1: dog}); ovperc needs it to keep their ids")
    return [str(n) for n in names], data


def _coco(path: Path, out: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{out / 'annotations.json'} cannot be read ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ValueError(f"{out / 'annotations.json'} is not a COCO file (lists 'images', "
                         "'annotations' and 'categories')")
    return data


def _voc_classes(out: Path, source: Any, owned: set[str]) -> list[str]:
    """``labels.txt`` when the dataset has its own, else the object names of its XMLs in order."""
    listed = source("labels.txt")
    if listed is not None:
        try:
            return [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{out / 'labels.txt'} cannot be read ({error})") from None
    names: list[str] = []
    for xml in sorted((out / "annotations").rglob("*.xml")):
        rel = relative(out, xml)
        path = source(rel) if rel is not None else None
        if path is None:
            continue
        try:
            root = ElementTree.fromstring(path.read_bytes())
        except (OSError, ElementTree.ParseError):
            continue  # reported when that image is labelled
        names += [str(o.findtext("name", "")).strip() for o in root.iter("object")]
    return list(dict.fromkeys(n for n in names if n))
