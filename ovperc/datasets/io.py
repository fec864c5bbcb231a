"""Find and read box/mask datasets in YOLO, COCO or Pascal VOC layout.

Every format is read through supervision's ``DetectionDataset.from_yolo``,
``from_coco`` and ``from_pascal_voc``; this module only finds the folders, names each
image by a stable key and adds back what those readers drop (prediction confidences).

Layouts (the ones ``ovperc label`` writes; a dataset may hold several splits, one per
sub-folder, e.g. ``train/`` and ``valid/``, each laid out the same way):

* **YOLO**: ``data.yaml`` (class ``names``) at the root, ``images/`` and ``labels/`` side
  by side (``labels/x.txt`` for ``images/x.jpg``, sub-folders mirrored), or per split
  ``train/images`` + ``train/labels``. Confidences come from the scores sidecar that
  ``ovperc label`` writes and YOLO trainers ignore: for ``<X>/labels/<sub>/<stem>.txt`` it
  is ``<X>/scores/<sub>/<stem>.txt``, one confidence per line (``0.8734``), in the order
  of the label file's lines. A sixth value on a box line (or a trailing odd value on a
  polygon line) is read as the confidence too.
* **COCO**: ``annotations.json`` (or any ``*.json`` holding ``images``, ``annotations``
  and ``categories``) with ``file_name`` relative to ``images/`` next to it (or to the
  json's own folder when there is no ``images/``). ``score`` is read as the confidence.
* **Pascal VOC**: ``images/`` and ``annotations/*.xml`` side by side (``JPEGImages/`` +
  ``Annotations/`` too, or the ``.xml`` files next to the images). An object's ``<score>``
  or ``<confidence>`` element is read as the confidence.

An image's key is its path relative to the split's images folder, prefixed with the split
name (``train/a.jpg``), so one dataset can be compared with another written in another
format.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from xml.etree import ElementTree

import numpy as np

from ovperc.masks import decode_instance_png

if TYPE_CHECKING:
    import supervision as sv

logger = logging.getLogger(__name__)

DatasetFormat = Literal["yolo", "coco", "voc"]
#: the dataset formats ovperc reads and writes.
FORMATS: tuple[str, ...] = ("yolo", "coco", "voc")
#: ``auto`` plus :data:`FORMATS`, as the CLI accepts them.
FORMAT_CHOICES: tuple[str, ...] = ("auto", *FORMATS)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_YOLO_YAML = ("data.yaml", "data.yml")
_VOC_IMAGE_DIRS = ("images", "JPEGImages")
_VOC_XML_DIRS = ("annotations", "Annotations")


class DatasetError(ValueError):
    """A folder that is not a readable dataset; the message says what was expected."""


@dataclass(frozen=True)
class Split:
    """One split of a dataset: where its images and annotations are.

    Attributes:
        name: ``""`` for a dataset without splits, else the split folder (``"train"``).
        format: ``"yolo"``, ``"coco"`` or ``"voc"``.
        images_dir: the folder the image keys are relative to.
        annotations: the YOLO labels folder, the COCO json file or the VOC xml folder.
        data_yaml: the YOLO ``data.yaml`` (``None`` for other formats).
        masks_dir: VOC instance-mask PNGs (``masks/<stem>.png``, pixel k = k-th object),
            when the split has them.
        labels_txt: VOC ``labels.txt`` (class names by id), when the split has one.
    """

    name: str
    format: DatasetFormat
    images_dir: Path
    annotations: Path
    data_yaml: Path | None = None
    masks_dir: Path | None = None
    labels_txt: Path | None = None

    def key(self, image_path: str | Path) -> str:
        """The dataset-wide key of an image of this split (``split/relative/path``)."""
        rel = Path(os.path.relpath(Path(image_path), self.images_dir)).as_posix()
        return f"{self.name}/{rel}" if self.name else rel


@dataclass
class LabeledImage:
    """One image of a dataset with its annotations.

    Attributes:
        key: ``split/relative/path`` of the image (see :meth:`Split.key`).
        path: the image file.
        detections: ``xyxy`` in pixels, ``class_id`` (index in the dataset's classes),
            ``data["class_name"]``, ``confidence`` when the files hold one (else ``None``)
            and ``mask`` when the annotations have masks.
        split: the split it belongs to.
    """

    key: str
    path: Path
    detections: sv.Detections
    split: Split


@dataclass
class Dataset:
    """A dataset on disk: its format, classes and splits; images are read on iteration.

    Example:
        >>> ds = load_dataset("hand-labels/")  # doctest: +SKIP
        >>> ds.format, ds.classes  # doctest: +SKIP
        ('coco', ['cat', 'dog'])
        >>> for item in ds:  # doctest: +SKIP
        ...     print(item.key, len(item.detections))
    """

    root: Path
    format: DatasetFormat
    splits: list[Split]
    classes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[LabeledImage]:
        for split in self.splits:
            yield from _read_split(split, self.classes)

    def images(self) -> dict[str, LabeledImage]:
        """Every image by key (reads all annotations).

        Example:
            >>> load_dataset("labels/").images()["a.jpg"].detections  # doctest: +SKIP
        """
        return {item.key: item for item in self}


# ---------------------------------------------------------------------- detection
def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file()
    )


def _is_coco_json(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys()


def _coco_jsons(folder: Path) -> list[Path]:
    preferred = folder / "annotations.json"
    if _is_coco_json(preferred):
        return [preferred]
    return [p for p in sorted(folder.glob("*.json")) if _is_coco_json(p)]


def _voc_dirs(folder: Path) -> tuple[Path, Path] | None:
    images = next((folder / d for d in _VOC_IMAGE_DIRS if (folder / d).is_dir()), None)
    xmls = next((folder / d for d in _VOC_XML_DIRS if (folder / d).is_dir()), None)
    if images is not None and xmls is not None:
        return images, xmls
    if images is not None and any(images.rglob("*.xml")):
        return images, images
    if images is None and any(folder.glob("*.xml")) and _has_images(folder):
        return folder, folder
    return None


def _looks_like(folder: Path) -> DatasetFormat | None:
    if any((folder / name).is_file() for name in _YOLO_YAML):
        return "yolo"
    if _coco_jsons(folder):
        return "coco"
    if _voc_dirs(folder) is not None:
        return "voc"
    return None


def _split_folders(root: Path) -> list[Path]:
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def detect_format(root: str | Path) -> DatasetFormat:
    """Guess a dataset's format from its files.

    ``data.yaml`` means YOLO, a COCO ``*.json`` means COCO, ``annotations/*.xml`` (or
    ``Annotations/``) means Pascal VOC; split sub-folders are looked into too.

    Raises:
        DatasetError: the folder is missing or none of the layouts fits.

    Example:
        >>> detect_format("dataset/")  # doctest: +SKIP
        'yolo'
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    found = _looks_like(root)
    if found is not None:
        return found
    for sub in _split_folders(root):
        found = _looks_like(sub)
        if found is not None:
            return found
    raise DatasetError(
        f"{root}: cannot tell the dataset format; expected data.yaml + images/ + labels/ "
        "(YOLO), annotations.json + images/ (COCO) or images/ + annotations/*.xml "
        "(Pascal VOC), at the top or in split folders such as train/"
    )


# ---------------------------------------------------------------------- splits
def _yolo_names(data_yaml: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise DatasetError(f"{data_yaml}: no 'names' list of classes")


def _yolo_splits(root: Path) -> list[Split]:
    data_yaml = next(root / n for n in _YOLO_YAML if (root / n).is_file())
    pairs: list[tuple[str, Path, Path]] = []
    if (root / "images").is_dir():
        pairs.append(("", root / "images", root / "labels"))
    else:
        for sub in _split_folders(root):
            if (sub / "images").is_dir():
                pairs.append((sub.name, sub / "images", sub / "labels"))
    if not pairs:
        raise DatasetError(f"{root}: YOLO dataset without an images/ folder (or train/images/, ...)")
    return [Split(name, "yolo", images, labels, data_yaml) for name, images, labels in pairs]


def _coco_splits(root: Path) -> list[Split]:
    def splits_in(folder: Path, name: str) -> list[Split]:
        jsons = _coco_jsons(folder)
        images = folder / "images" if (folder / "images").is_dir() else folder
        if len(jsons) > 1:
            return [Split(f"{name}/{j.stem}".strip("/") if name else j.stem, "coco", images, j)
                    for j in jsons]
        return [Split(name, "coco", images, j) for j in jsons]

    splits = splits_in(root, "")
    if not splits:
        for sub in _split_folders(root):
            splits.extend(splits_in(sub, sub.name))
    if not splits:
        raise DatasetError(f"{root}: no COCO annotations json found")
    return splits


def _voc_split(folder: Path, name: str, dirs: tuple[Path, Path]) -> Split:
    masks = folder / "masks"
    labels = folder / "labels.txt"
    return Split(name, "voc", dirs[0], dirs[1], masks_dir=masks if masks.is_dir() else None,
                 labels_txt=labels if labels.is_file() else None)


def _voc_splits(root: Path) -> list[Split]:
    found = _voc_dirs(root)
    if found is not None:
        return [_voc_split(root, "", found)]
    splits = []
    for sub in _split_folders(root):
        found = _voc_dirs(sub)
        if found is not None:
            splits.append(_voc_split(sub, sub.name, found))
    if not splits:
        raise DatasetError(f"{root}: no Pascal VOC images/ + annotations/ folders found")
    return splits


def find_splits(root: str | Path, fmt: str = "auto") -> tuple[DatasetFormat, list[Split]]:
    """The format and splits of a dataset folder.

    Raises:
        DatasetError: the folder does not hold a dataset of that format.
        ValueError: ``fmt`` is not one of :data:`FORMAT_CHOICES`.

    Example:
        >>> find_splits("dataset/", "yolo")  # doctest: +SKIP
        ('yolo', [Split(name='train', ...), Split(name='valid', ...)])
    """
    if fmt not in FORMAT_CHOICES:
        raise ValueError(f"format must be one of {FORMAT_CHOICES}, got {fmt!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    chosen: DatasetFormat = detect_format(root) if fmt == "auto" else fmt  # type: ignore[assignment]
    finder = {"yolo": _yolo_splits, "coco": _coco_splits, "voc": _voc_splits}[chosen]
    return chosen, finder(root)


def load_dataset(root: str | Path, fmt: str = "auto") -> Dataset:
    """Open a dataset folder (YOLO, COCO or Pascal VOC); annotations are read on iteration.

    Class names come from ``data.yaml`` (YOLO), the categories (COCO) or the object names
    in order of first appearance (VOC).

    Args:
        root: the dataset folder.
        fmt: ``auto`` (see :func:`detect_format`), ``yolo``, ``coco`` or ``voc``.

    Raises:
        DatasetError: the folder does not hold a dataset of that format.

    Example:
        >>> ds = load_dataset("auto-labels/")  # doctest: +SKIP
        >>> len(ds.images())  # doctest: +SKIP
        120
    """
    chosen, splits = find_splits(root, fmt)
    classes = _dataset_classes(chosen, splits)
    return Dataset(root=Path(root), format=chosen, splits=splits, classes=classes)


def _dataset_classes(fmt: DatasetFormat, splits: list[Split]) -> list[str]:
    classes: list[str] = []

    def add(names: list[str]) -> None:
        classes.extend(n for n in names if n not in classes)

    for split in splits:
        if fmt == "yolo":
            assert split.data_yaml is not None
            add(_yolo_names(split.data_yaml))
        elif fmt == "coco":
            data = json.loads(split.annotations.read_text(encoding="utf-8"))
            add([str(c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"])])
        else:
            if split.labels_txt is not None:
                lines = split.labels_txt.read_text(encoding="utf-8").splitlines()
                add([line.strip() for line in lines if line.strip()])
            for xml in sorted(split.annotations.rglob("*.xml")):
                add(_voc_object_names(xml))
    return classes


def _voc_object_names(xml: Path) -> list[str]:
    try:
        root = ElementTree.parse(xml).getroot()
    except ElementTree.ParseError as exc:
        raise DatasetError(f"{xml}: not a readable Pascal VOC xml ({exc})") from exc
    return [(obj.findtext("name") or "").strip() for obj in root.iter("object")]


# ---------------------------------------------------------------------- reading
def _image_dirs(images_dir: Path) -> list[Path]:
    """``images_dir`` and every sub-folder of it that holds images, sorted."""
    dirs = {images_dir}
    for path in images_dir.rglob("*"):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            dirs.add(path.parent)
    return sorted(dirs)


def _read_split(split: Split, classes: list[str]) -> Iterator[LabeledImage]:
    import supervision as sv

    if split.format == "coco":
        parts = [(split.images_dir, split.annotations)]
    else:
        parts = [(d, split.annotations / d.relative_to(split.images_dir))
                 for d in _image_dirs(split.images_dir)]
    for images_dir, ann in parts:
        scores_dir = _yolo_scores_dir(split, images_dir) if split.format == "yolo" else None
        if split.format == "yolo":
            assert split.data_yaml is not None
            ds = sv.DetectionDataset.from_yolo(str(images_dir), str(ann), str(split.data_yaml))
        elif split.format == "coco":
            ds = sv.DetectionDataset.from_coco(str(images_dir), str(ann))
            coco_scores = _coco_scores(ann)
        else:
            ds = sv.DetectionDataset.from_pascal_voc(str(images_dir), str(ann))
        resolved = Path(images_dir).resolve()
        for image_path in sorted(ds.image_paths):
            path = Path(image_path)
            if split.format == "coco":
                # supervision resolves COCO paths; keys stay relative to the given folder
                path = split.images_dir / path.relative_to(resolved)
            det = _normalise(ds.annotations[image_path], ds.classes, classes)
            if split.format == "yolo":
                assert scores_dir is not None
                conf = _yolo_scores(ann / f"{path.stem}.txt", scores_dir / f"{path.stem}.txt")
            elif split.format == "coco":
                conf = coco_scores.get(path.relative_to(split.images_dir).as_posix())
            else:
                conf = _voc_scores(ann / f"{path.stem}.xml")
            if conf is not None and len(conf) == len(det):
                det.confidence = np.asarray(conf, dtype=np.float32)
            if split.masks_dir is not None and det.mask is None and len(det):
                png = split.masks_dir / path.relative_to(split.images_dir).with_suffix(".png")
                if png.is_file():
                    det.mask = decode_instance_png(png, len(det))
            yield LabeledImage(key=split.key(path), path=path, detections=det, split=split)


def _normalise(det: sv.Detections, local: list[str], classes: list[str]) -> sv.Detections:
    """Class ids of the whole dataset and ``class_name``; no confidence until one is read."""
    n = len(det)
    ids = np.zeros(0, dtype=int) if det.class_id is None else np.asarray(det.class_id, dtype=int)
    names = np.array([local[i] for i in ids], dtype=object) if n else np.array([], dtype=object)
    det.class_id = np.array([classes.index(str(nm)) for nm in names], dtype=int)
    det.data["class_name"] = names
    det.confidence = None
    return det


def _yolo_scores_dir(split: Split, images_dir: Path) -> Path:
    """The scores sidecar folder for one images folder: ``labels`` replaced by ``scores``."""
    return split.annotations.with_name("scores") / images_dir.relative_to(split.images_dir)


def _yolo_scores(label: Path, sidecar: Path) -> list[float] | None:
    """Per-line confidences of a YOLO label file: its sidecar's, else a last column on every line.

    A sidecar that does not hold one number in [0, 1] per label line is ignored with a warning.
    """
    if not label.is_file():
        return None
    lines = [line.split() for line in label.read_text(encoding="utf-8").splitlines()]
    lines = [tokens for tokens in lines if tokens]
    if sidecar.is_file():
        scores = _sidecar_scores(sidecar, len(lines))
        if scores is not None:
            return scores
    scores = []
    for tokens in lines:
        if len(tokens) == 6 or (len(tokens) > 6 and len(tokens) % 2 == 0):
            scores.append(float(tokens[-1]))
        else:
            return None
    return scores


def _sidecar_scores(sidecar: Path, count: int) -> list[float] | None:
    """The confidences of a scores sidecar, or ``None`` (with a warning) when it is malformed."""
    values = [line.strip() for line in sidecar.read_text(encoding="utf-8").splitlines()]
    values = [v for v in values if v]
    try:
        scores = [float(v) for v in values]
    except ValueError as exc:
        logger.warning("%s: not one confidence per line (%s); its scores are ignored", sidecar, exc)
        return None
    if len(scores) != count:
        logger.warning("%s: %d scores for %d label lines; its scores are ignored",
                       sidecar, len(scores), count)
        return None
    if any(not 0.0 <= s <= 1.0 for s in scores):
        logger.warning("%s: confidences outside [0, 1]; its scores are ignored", sidecar)
        return None
    return scores


def _coco_scores(annotations: Path) -> dict[str, list[float]]:
    """``file_name -> [score, ...]`` for the images whose annotations all carry a score."""
    data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    scores: dict[str, list[float]] = {}
    for img in data["images"]:
        anns = by_image.get(img["id"], [])
        if anns and all("score" in a for a in anns):
            scores[Path(img["file_name"]).as_posix()] = [float(a["score"]) for a in anns]
    return scores


def _voc_scores(xml: Path) -> list[float] | None:
    """Per-object ``<score>``/``<confidence>`` of a VOC xml, when every object has one."""
    if not xml.is_file():
        return None
    scores = []
    for obj in ElementTree.parse(xml).getroot().iter("object"):
        text = obj.findtext("score") or obj.findtext("confidence")
        if text is None:
            return None
        scores.append(float(text))
    return scores
