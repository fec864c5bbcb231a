"""Dataset writers: one image's annotations at a time, each file written atomically.

Nothing is held per image: :meth:`DatasetWriter.write` writes an image's files as soon as
its detections are known, and :meth:`DatasetWriter.finalize` writes the few dataset-wide
files (``data.yaml``, COCO's ``annotations.json``, assembled by streaming per-image parts).

Layouts (``<stem>`` comes from :func:`ovperc.labeling.scan.output_stems`)::

    yolo:  images/<stem>.<ext>   labels/<stem>.txt   scores/<stem>.txt   data.yaml
    coco:  images/<stem>.<ext>   annotations.json
    voc:   images/<stem>.<ext>   annotations/<stem>.xml   labels.txt
    masks/<stem>.png   (voc with masks, or any format with mask PNGs asked for)

YOLO label files keep the 5 columns (or polygons) trainers require; each box's confidence
goes to ``scores/<stem>.txt``, one per line in the label file's order, which trainers ignore
and ``ovperc evaluate`` reads. With a train/val split (an :class:`ImageItem` with a
``split``), YOLO and COCO put each image under its split (``images/train/``,
``labels/val/``, ...; COCO ``annotations_train.json`` and ``annotations_val.json`` with
``file_name`` relative to ``images/``), and VOC lists the stems in
``ImageSets/Main/train.txt`` and ``val.txt``.

Per-box lines come from supervision's per-object helpers (``object_to_yolo``,
``object_to_pascal_voc``, ``detections_to_coco_annotations``); the files load back with
``sv.DetectionDataset.from_yolo / from_coco / from_pascal_voc``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ovperc.atomic import atomic_copy, atomic_file, atomic_link, atomic_write_bytes, atomic_write_text
from ovperc.labeling.formats import coco_annotations, voc_xml, yolo_lines
from ovperc.labeling.manifest import STATE_DIR
from ovperc.masks import encode_instance_png

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

FormatName = Literal["yolo", "coco", "voc"]
FORMATS: tuple[str, ...] = ("yolo", "coco", "voc")
ImageMode = Literal["copy", "hardlink", "symlink", "none"]
IMAGE_MODES: tuple[str, ...] = ("copy", "hardlink", "symlink", "none")


@dataclass(frozen=True)
class ImageItem:
    """What a writer needs to know about one image.

    Attributes:
        source: the original image file (copied or linked into ``images/``).
        stem: the collision-free output name without extension.
        suffix: the original extension (``.jpg``, ``.PNG``, ...).
        width, height: size in pixels after EXIF orientation (what the boxes refer to).
        split: ``"train"`` or ``"val"`` in a split dataset, ``""`` otherwise.

    Example:
        >>> ImageItem(Path("photos/a.jpg"), "a", ".jpg", 640, 480).file_name
        'a.jpg'
    """

    source: Path
    stem: str
    suffix: str
    width: int
    height: int
    split: str = ""

    @property
    def name(self) -> str:
        """The image's path without extension under each folder of a split layout
        (``train/a``), or its stem."""
        return f"{self.split}/{self.stem}" if self.split else self.stem

    @property
    def file_name(self) -> str:
        """The image's path inside the dataset's ``images/`` folder."""
        return self.name + self.suffix


class DatasetWriter:
    """Writes one dataset format; subclasses add the per-format files.

    Args:
        out: the dataset folder.
        masks: write masks in the format's own way (YOLO polygons, COCO RLE, VOC PNGs).
        mask_png: also write one instance-mask PNG per image in ``masks/``.
        images: put each image in ``images/`` by ``copy`` (default), ``hardlink``,
            ``symlink``, or ``none`` (annotations only).
        durable: ``fsync`` every file before it is renamed into place.
        val_from: a hand-labelled dataset that is the validation set (YOLO's ``data.yaml``
            points ``val`` at its images).

    Example:
        >>> writer = make_writer("yolo", "dataset/", masks=True)  # doctest: +SKIP
        >>> writer.write(item, detections, ["person", "car"])  # doctest: +SKIP
        >>> writer.finalize(["person", "car"], ["a", "b"])  # doctest: +SKIP
    """

    format: str = ""

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        masks: bool = False,
        mask_png: bool = False,
        images: ImageMode = "copy",
        durable: bool = True,
        val_from: str | os.PathLike | None = None,
    ) -> None:
        if images not in IMAGE_MODES:
            raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")
        self.val_from = None if val_from is None else Path(val_from)
        self.out = Path(out)
        self.masks = masks
        self.mask_png = mask_png
        self.images = images
        self.durable = durable
        #: the dataset-wide content ovperc was told to extend rather than replace (the
        #: original ``data.yaml`` mapping, or ``annotations.json``; see
        #: :mod:`ovperc.labeling.existing`), else ``None``.
        self.base: dict | None = None

    # -------------------------------------------------------------- per image
    def write(self, item: ImageItem, detections: sv.Detections, classes: list[str], *,
              image: bool = True) -> None:
        """Write every file of one image (image, annotations, masks), each atomically.

        ``detections.class_id`` must index ``classes`` (the dataset ontology's classes).
        With ``image=False`` the image file is not put in ``images/`` (it is there already).
        """
        self._check_ids(detections, classes)
        if image:
            self.write_image(item)
        if self.wants_png:
            masks = detections.mask
            if masks is None:
                masks = np.zeros((0, item.height, item.width), dtype=bool)
            png = encode_instance_png(masks, (item.height, item.width))
            atomic_write_bytes(self.mask_path(self._name(item)), png, durable=self.durable)
        self._write_annotations(item, detections, classes)

    @property
    def wants_png(self) -> bool:
        """Whether instance-mask PNGs are written."""
        return self.mask_png

    def mask_path(self, stem: str) -> Path:
        """Where an image's instance-mask PNG goes."""
        return self.out / "masks" / f"{stem}.png"

    def image_path(self, item: ImageItem) -> Path:
        """Where an image goes inside the dataset."""
        return self.out / "images" / (self._name(item) + item.suffix)

    def paths(self, item: ImageItem) -> list[Path]:
        """Every file :meth:`write` writes for one image, in the order it writes them.

        Example:
            >>> make_writer("yolo", "ds").paths(ImageItem(Path("a.jpg"), "a", ".jpg", 4, 4))
            [PosixPath('ds/images/a.jpg'), PosixPath('ds/labels/a.txt'), PosixPath('ds/scores/a.txt')]
        """
        paths = [] if self.images == "none" else [self.image_path(item)]
        if self.wants_png:
            paths.append(self.mask_path(self._name(item)))
        return [*paths, *self.annotation_paths(self._name(item))]

    def _name(self, item: ImageItem) -> str:
        """Where an image's files go under each folder: ``train/a`` in a split layout."""
        return item.name

    def annotation_paths(self, name: str) -> list[Path]:
        """Where an image's annotations go (a label file, an XML, a COCO part)."""
        raise NotImplementedError

    def dataset_files(self, splits: Iterable[str] = ()) -> list[Path]:
        """The dataset-wide files :meth:`finalize` writes for images of these ``splits``."""
        return []

    def write_image(self, item: ImageItem) -> None:
        """Put the image into ``images/`` as ``images`` says (nothing for ``none``)."""
        if self.images == "none":
            return
        target = self.image_path(item)
        if self.images == "copy":
            atomic_copy(item.source, target, durable=self.durable)
        else:
            atomic_link(item.source, target, symbolic=self.images == "symlink")

    def _write_annotations(self, item: ImageItem, detections: sv.Detections, classes: list[str]) -> None:
        raise NotImplementedError

    @staticmethod
    def _check_ids(detections: sv.Detections, classes: list[str]) -> None:
        if len(detections) == 0:
            return
        ids = np.asarray(detections.class_id)
        if ids.min() < 0 or ids.max() >= len(classes):
            raise ValueError(
                f"class ids {sorted(set(ids.tolist()))} do not all index the {len(classes)} classes"
            )

    # -------------------------------------------------------------- whole dataset
    def finalize(self, classes: list[str], stems: Iterable[str], splits: Sequence[str] | None = None) -> None:
        """Write the dataset-wide files for the images ``stems`` (in dataset order).

        ``splits`` gives each image's split (``train``/``val``) in a split dataset.
        """

    def managed(self) -> list[Path]:
        """The folders and dataset-wide files this writer writes (where a SOURCE must not be)."""
        return [self.out / "images", self.out / "masks"]


# ---------------------------------------------------------------------------------- YOLO
class YoloWriter(DatasetWriter):
    """YOLO detection (``class cx cy w h``) or, with masks, segmentation polygon lines.

    With masks, each detection is one line: its mask's outline as a polygon (a mask in
    several pieces, or with holes, is joined into one outline by zero-width seams), so the
    label file has exactly one line per detection. ``data.yaml`` lists the classes by id.
    """

    format = "yolo"

    def label_path(self, name: str) -> Path:
        """Where an image's label file goes."""
        return self.out / "labels" / f"{name}.txt"

    def scores_path(self, name: str) -> Path:
        """Where an image's confidences go: one per line, in the label file's order."""
        return self.out / "scores" / f"{name}.txt"

    def annotation_paths(self, name: str) -> list[Path]:
        return [self.label_path(name), self.scores_path(name)]

    def dataset_files(self, splits: Iterable[str] = ()) -> list[Path]:
        return [self.out / "data.yaml"]

    def _write_annotations(self, item: ImageItem, detections: sv.Detections, classes: list[str]) -> None:
        lines = yolo_lines(detections, (item.height, item.width), masks=self.masks)
        text = "".join(line + "\n" for line in lines)
        atomic_write_text(self.label_path(item.name), text, durable=self.durable)
        scores = [] if detections.confidence is None else detections.confidence
        text = "".join(f"{float(score):.4f}\n" for score in scores)
        atomic_write_text(self.scores_path(item.name), text, durable=self.durable)

    def finalize(self, classes: list[str], stems: Iterable[str], splits: Sequence[str] | None = None) -> None:
        import yaml

        present = set(splits or ())
        if present - {""}:
            train, val = "images/train", "images/val" if "val" in present else None
        else:
            train, val = "images", None
        if self.val_from is not None:
            val = str(self.val_from)
        data = {"train": train, "val": val if val is not None else train,
                "nc": len(classes), "names": dict(enumerate(classes))}
        if self.base is not None:  # a data.yaml ovperc extends: only its classes change, as written
            names = list(classes) if isinstance(self.base.get("names"), list) else dict(enumerate(classes))
            data = {**self.base, "names": names, **({"nc": len(classes)} if "nc" in self.base else {})}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if val is None and self.base is None:
            text = ("# no validation set: `ovperc label --val-split 0.1` holds images out, "
                    "`--val-from DIR` uses hand labels\n" + text)
        atomic_write_text(self.out / "data.yaml", text, durable=self.durable)

    def managed(self) -> list[Path]:
        return [*super().managed(), self.out / "labels", self.out / "scores", self.out / "data.yaml"]


# ---------------------------------------------------------------------------------- COCO
class CocoWriter(DatasetWriter):
    """COCO: boxes, masks as compressed RLE (``iscrowd: 0``), a ``score`` per annotation.

    Each image's part is written to ``.ovperc/coco/<stem>.json``; :meth:`finalize` streams
    the parts into ``annotations.json`` (image ids 1..N in dataset order, annotation ids in
    order), so memory does not grow with the dataset.
    """

    format = "coco"

    def part_path(self, name: str) -> Path:
        """Where one image's COCO part is kept until the final file is assembled."""
        return self.out / STATE_DIR / "coco" / f"{name}.json"

    def annotation_paths(self, name: str) -> list[Path]:
        return [self.part_path(name)]

    def json_path(self, split: str = "") -> Path:
        """``annotations.json``, or ``annotations_<split>.json`` in a split dataset."""
        return self.out / (f"annotations_{split}.json" if split else "annotations.json")

    def dataset_files(self, splits: Iterable[str] = ()) -> list[Path]:
        return [self.json_path(split) for split in sorted(set(splits) or {""})]

    def _write_annotations(self, item: ImageItem, detections: sv.Detections, classes: list[str]) -> None:
        part = {
            "image": {"file_name": item.file_name, "width": item.width, "height": item.height},
            "annotations": coco_annotations(detections, masks=self.masks),
        }
        atomic_write_text(self.part_path(item.name), _dumps(part) + "\n", durable=self.durable)

    def finalize(self, classes: list[str], stems: Iterable[str], splits: Sequence[str] | None = None) -> None:
        stems = list(stems)
        splits = list(splits) if splits is not None else [""] * len(stems)
        for split in sorted(set(splits)):
            names = [f"{sp}/{stem}" if sp else stem for stem, sp in zip(stems, splits) if sp == split]
            self._write_json(self.json_path(split), classes, names)

    def _write_json(self, target: Path, classes: list[str], names: list[str]) -> None:
        from supervision.dataset.formats.coco import classes_to_coco_categories

        if self.base is not None:
            from ovperc.labeling.hand_labels import extend_coco

            data = extend_coco(self.base, classes, [self._read_part(name) for name in names])
            with atomic_file(target, "w", durable=self.durable) as handle:
                json.dump(data, handle, ensure_ascii=False)
                handle.write("\n")
            return
        with atomic_file(target, "w", durable=self.durable) as handle:
            handle.write('{"info": {"description": "labelled with ovperc"},\n')
            handle.write(f'"categories": {_dumps(classes_to_coco_categories(classes))},\n')
            handle.write('"images": [')
            for image_id, name in enumerate(names, start=1):
                image = dict(self._read_part(name)["image"])
                image = {"id": image_id, **image}
                handle.write(("\n" if image_id == 1 else ",\n") + _dumps(image))
            handle.write('],\n"annotations": [')
            annotation_id = 1
            for image_id, name in enumerate(names, start=1):
                for annotation in self._read_part(name)["annotations"]:
                    record = {"id": annotation_id, "image_id": image_id, **annotation}
                    handle.write(("\n" if annotation_id == 1 else ",\n") + _dumps(record))
                    annotation_id += 1
            handle.write("]}\n")

    def _read_part(self, name: str) -> dict:
        return json.loads(self.part_path(name).read_text(encoding="utf-8"))

    def managed(self) -> list[Path]:
        return [*super().managed(), self.out / "annotations.json", self.out / "annotations_train.json",
                self.out / "annotations_val.json"]


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------- VOC
class VocWriter(DatasetWriter):
    """Pascal VOC: one XML per image with each detection's box and class name.

    Masks go to instance PNGs in ``masks/`` (pixel value k = the k-th object of the XML);
    ``labels.txt`` lists the classes by id, since VOC files name classes, not ids.
    """

    format = "voc"

    @property
    def wants_png(self) -> bool:
        return self.mask_png or self.masks

    def xml_path(self, stem: str) -> Path:
        """Where an image's XML goes."""
        return self.out / "annotations" / f"{stem}.xml"

    def _name(self, item: ImageItem) -> str:
        return item.stem  # VOC keeps one flat folder; ImageSets/Main lists the splits

    def annotation_paths(self, name: str) -> list[Path]:
        return [self.xml_path(name)]

    def dataset_files(self, splits: Iterable[str] = ()) -> list[Path]:
        return [self.out / "labels.txt", *(self.image_set(s) for s in sorted(set(splits) - {""}))]

    def _write_annotations(self, item: ImageItem, detections: sv.Detections, classes: list[str]) -> None:
        xml = voc_xml(item, detections, classes)
        atomic_write_text(self.xml_path(item.stem), xml, durable=self.durable)

    def finalize(self, classes: list[str], stems: Iterable[str], splits: Sequence[str] | None = None) -> None:
        text = "".join(name + "\n" for name in classes)
        atomic_write_text(self.out / "labels.txt", text, durable=self.durable)
        stems = list(stems)
        for split in sorted(set(splits or ()) - {""}):
            listed = "".join(stem + "\n" for stem, sp in zip(stems, splits or ()) if sp == split)
            atomic_write_text(self.image_set(split), listed, durable=self.durable)

    def image_set(self, split: str) -> Path:
        """``ImageSets/Main/<split>.txt``: the stems of one split, one per line."""
        return self.out / "ImageSets" / "Main" / f"{split}.txt"

    def managed(self) -> list[Path]:
        return [*super().managed(), self.out / "annotations", self.out / "labels.txt",
                self.out / "ImageSets"]


_WRITERS: dict[str, type[DatasetWriter]] = {"yolo": YoloWriter, "coco": CocoWriter, "voc": VocWriter}


def make_writer(
    format: str,
    out: str | os.PathLike,
    *,
    masks: bool = False,
    mask_png: bool = False,
    images: ImageMode = "copy",
    durable: bool = True,
    val_from: str | os.PathLike | None = None,
) -> DatasetWriter:
    """The writer for a format name (options as :class:`DatasetWriter` takes them).

    Raises:
        ValueError: unknown format.

    Example:
        >>> make_writer("coco", "dataset/").format
        'coco'
    """
    if format not in _WRITERS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    return _WRITERS[format](out, masks=masks, mask_png=mask_png, images=images, durable=durable,
                            val_from=val_from)
