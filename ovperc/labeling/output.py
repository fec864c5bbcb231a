"""Where a labelling run writes: layout checks, a previous run's removal, resume checks,
and a hand-labelled validation set kept apart."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovperc.labeling.manifest import STATE_DIR, Manifest, discard, read_stored
from ovperc.labeling.scan import ScanEntry, is_image_name, sort_key
from ovperc.labeling.sink import fingerprint
from ovperc.labeling.writers import DatasetWriter, ImageItem, make_writer

logger = logging.getLogger(__name__)


def prepare_output(
    out: str | os.PathLike,
    writer: DatasetWriter,
    signature: Mapping[str, Any],
    *,
    classes: Sequence[str],
    overwrite: bool,
    source: str | os.PathLike | None = None,
    existing: bool = False,
) -> Manifest:
    """Open or create the run's manifest; with ``overwrite``, first remove a previous run.

    ``overwrite`` removes exactly the files the previous run's manifest recorded, and
    nothing else: not the source images, not files another tool or a person put there. A
    ``source`` inside ``out`` is left alone and does not make ``out`` count as not empty.
    With ``existing`` (``ovperc label --existing``) ``out`` may hold a dataset of other labels.
    The caller holds :func:`~ovperc.labeling.lock.dataset_lock` on ``out``.

    Raises:
        ManifestMismatchError: a run with another signature is there and not ``overwrite``,
            or ``out`` holds files ovperc did not write and not ``overwrite``.
    """
    out = Path(out)
    if overwrite and out.exists():
        stored = read_stored(out)
        if stored is not None and stored.get("signature") != json.loads(json.dumps(dict(signature))):
            discard(out, files_of=_legacy_files)
    require_empty = not overwrite and not existing and not holds_only_source(out, source)
    return Manifest.open(out, signature, classes=classes, require_empty=require_empty)


def check_layout(source: str | os.PathLike, out: str | os.PathLike, writer: DatasetWriter, *,
                 in_place: bool = False) -> None:
    """Refuse a SOURCE and OUT that overlap in a way that could touch the user's images.

    ``out`` may lie inside ``source`` (the scan leaves it out), and ``source`` inside ``out``
    (it is never written to), but not ``source`` equal to ``out`` nor inside a folder ovperc
    writes (``images/``, ``labels/``, ``.ovperc/``, ...). With ``in_place`` (a dataset's own
    images labelled where they are: no image is written) ``source`` may be ``out/images``.

    Raises:
        ValueError: the layout is refused; the message says why and what to do.

    Example:
        >>> check_layout("data/images", "data", make_writer("yolo", "data"))  # doctest: +SKIP
        Traceback (most recent call last):
        ValueError: SOURCE data/images is inside data/images, ...
    """
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder for the dataset")
    src, dst = Path(os.path.abspath(source)), Path(os.path.abspath(out))
    real_src, real_dst = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    if src == dst or real_src == real_dst:
        raise ValueError(f"--out {out} is SOURCE itself; write the dataset to another folder "
                         "(it may lie inside SOURCE)")
    written = [*_all_managed(dst), dst / STATE_DIR]
    if in_place:
        written = [f for f in written if f != dst / "images"]
    for folder in written:
        inside = folder.relative_to(dst)
        # the folder as named, as reached through OUT's real path, and where it really is
        # (``images/`` may be a symlink to the photos themselves)
        targets = {dst / inside, real_dst / inside, Path(os.path.realpath(folder))}
        if any(s == t or t in s.parents for s in (src, real_src) for t in targets):
            hint = ""
            if inside.as_posix() == "images":
                hint = (" (to label a dataset's own images where they are, give SOURCE "
                        f"{out}/images with --existing keep, skip or merge)")
            raise ValueError(
                f"SOURCE {source} is inside {out}/{inside.as_posix()}, where ovperc writes "
                f"the dataset; move the images elsewhere or choose another --out{hint}"
            )


def holds_only_source(out: Path, source: str | os.PathLike | None) -> bool:
    """Whether ``out`` holds nothing but ``source`` (and ovperc's state folder)."""
    if source is None or not out.is_dir():
        return False
    src = Path(os.path.abspath(source))
    dst = Path(os.path.abspath(out))
    if dst not in src.parents:
        return False
    top = dst / src.relative_to(dst).parts[0]
    return all(p.name == STATE_DIR or Path(os.path.abspath(p)) == top for p in out.iterdir())


def _legacy_files(signature: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """The files a version-1 manifest's record stands for (those did not list them)."""
    writer = make_writer(str(signature.get("format", "yolo")), ".", masks=bool(signature.get("masks")),
                         mask_png=bool(signature.get("mask_png")),
                         images=signature.get("images", "copy"))
    item = ImageItem(Path(str(record["rel"])), str(record["stem"]), Path(str(record["rel"])).suffix, 1, 1)
    return [p.as_posix() for p in writer.paths(item)]


def _all_managed(out: Path) -> list[Path]:
    from ovperc.labeling.writers import FORMATS

    return [p for f in FORMATS for p in make_writer(f, out).managed()]


def fill_legacy_files(manifest: Manifest, writer: DatasetWriter) -> None:
    """Give records of an older manifest (which did not list their files) the files the
    writer writes for them, so that forgetting such an image removes them too.

    Example:
        >>> fill_legacy_files(manifest, make_writer("yolo", "dataset/"))  # doctest: +SKIP
    """
    for record in manifest.done.values():
        if "files" in record:
            continue
        rel, stem = Path(str(record["rel"])), str(record["stem"])
        item = ImageItem(rel, stem, rel.suffix, 1, 1, str(record.get("split", "")))
        try:
            record["files"] = [p.relative_to(writer.out).as_posix() for p in writer.paths(item)]
        except (KeyError, ValueError):  # a layout this writer cannot place: leave it as it was
            continue


def revalidate(manifest: Manifest, entries: Sequence[ScanEntry], stems: Mapping[str, str],
               base_classes: Sequence[str]) -> list[str]:
    """Forget finished images that a fresh run over the current source would write otherwise.

    An image is redone when its source is gone, unreadable or changed (size, modification
    time), when its output name changed (files were added or removed beside it), or when its
    class ids would differ because an image that introduced a class is gone.

    Images whose labels were reviewed (``ovperc import``; their record has ``reviewed``)
    are never forgotten, and while the dataset holds any, class ids stay as they are
    rather than follow a fresh run's order.

    Returns:
        The relative paths forgotten (their files are removed; they are labelled again).
    """
    current = {e.rel: e for e in entries if e.problem is None}
    stale = []
    for rel, record in manifest.done.items():
        if record.get("reviewed"):
            continue  # a person's labels: never redone
        entry = current.get(rel)
        if entry is None or stems.get(rel) != record.get("stem"):
            stale.append(rel)
            continue
        stored = record.get("source")
        try:
            if stored is not None and fingerprint(entry.path) != list(stored):
                stale.append(rel)
        except OSError:
            stale.append(rel)
    forgotten = manifest.forget(stale)
    if any(r.get("reviewed") or "classes" not in r for r in manifest.done.values()):
        # reviewed labels keep their ids, and so do records of an older manifest (their
        # classes' order of first use was not recorded): none may move
        return forgotten
    while True:  # class ids as a fresh run would give them: first use, in dataset order
        order = sorted(manifest.done.values(), key=lambda r: sort_key(str(r["rel"])))
        classes = list(base_classes)
        for record in order:
            names = record.get("classes", list(record.get("counts", {})))
            classes.extend(n for n in names if n not in classes)
        if classes == manifest.classes:
            return forgotten
        moved = [str(r["rel"]) for r in order
                 if any(n not in manifest.classes or classes.index(n) != manifest.classes.index(n)
                        for n in r.get("classes", list(r.get("counts", {}))))]
        forgotten += manifest.forget(moved)
        if not moved:
            manifest.reset_classes(classes)


@dataclass(frozen=True)
class HandValidationSet:
    """A hand-labelled dataset used as the validation set of an auto-labelled one.

    Attributes:
        root: the dataset folder.
        classes: its class names, by id.
        images_dir: the folder of its (validation) images.
        images: every image file in it.
    """

    root: Path
    classes: list[str]
    images_dir: Path
    images: list[Path]

    def members(self, entries: Sequence[ScanEntry]) -> list[str]:
        """The relative paths of ``entries`` whose bytes equal one of this set's images.

        Only files of a size some validation image has are read and hashed.
        """
        by_size: dict[int, set[str]] = {}
        for path in self.images:
            by_size.setdefault(path.stat().st_size, set()).add(_sha1(path))
        found = []
        for entry in entries:
            try:
                hashes = by_size.get(entry.path.stat().st_size)
                if hashes and _sha1(entry.path) in hashes:
                    found.append(entry.rel)
            except OSError:
                continue
        return found


def hand_validation_set(root: str | os.PathLike, format: str) -> HandValidationSet:
    """Open a hand-labelled dataset as a validation set (its ``val``/``valid`` split when it
    has several).

    Raises:
        ValueError: ``root`` is not a readable dataset.

    Example:
        >>> hand_validation_set("hand-labelled/", "yolo").classes  # doctest: +SKIP
        ['cat', 'dog']
    """
    from ovperc.datasets.io import DatasetError, load_dataset

    try:
        dataset = load_dataset(root)
    except DatasetError as error:
        raise ValueError(f"--val-from: {error}") from error
    splits = {split.name: split for split in dataset.splits}
    split = next((splits[n] for n in ("val", "valid", "validation") if n in splits), dataset.splits[0])
    images = [p for p in sorted(split.images_dir.rglob("*")) if p.is_file() and is_image_name(p.name)]
    return HandValidationSet(Path(root), list(dataset.classes), Path(os.path.abspath(split.images_dir)),
                             images)


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_in_place(source: str | os.PathLike, out: str | os.PathLike) -> bool:
    """Whether ``source`` is ``out/images``: a dataset's own images, labelled where they are.

    Example:
        >>> is_in_place("data/images", "data"), is_in_place("photos", "data")
        (True, False)
    """
    images = Path(out) / "images"
    return (Path(os.path.abspath(source)) == Path(os.path.abspath(images))
            or (Path(source).exists() and os.path.realpath(source) == os.path.realpath(images)))
