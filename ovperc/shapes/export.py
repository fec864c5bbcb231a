"""Writing shapes scenes to disk: image folders and ground-truth datasets.

The ground truth goes through the same dataset writers as ``ovperc label``, so a
labelled copy of the images and the truth pair up image by image in ``ovperc evaluate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ovperc.shapes.world import CLASSES, Scene

#: Image file types :func:`write_images` writes.
SUFFIXES = (".png", ".jpg")


def write_images(
    scenes: Sequence[Scene],
    folder: str | os.PathLike,
    *,
    prefix: str = "shapes",
    suffix: str = ".png",
    quality: int = 90,
) -> list[Path]:
    """Save each scene's image as ``<prefix>_<i:03d><suffix>`` in ``folder``.

    Args:
        scenes: the scenes to save.
        folder: where to write (created if missing).
        prefix: file name prefix.
        suffix: ``.png`` (lossless) or ``.jpg`` (small files, at ``quality``).
        quality: JPEG quality, 1 to 95.

    Returns:
        The written paths, in scene order.

    Example:
        >>> paths = write_images(generate_scenes(2, seed=0), tmp_path)  # doctest: +SKIP
        >>> [p.name for p in paths]  # doctest: +SKIP
        ['shapes_000.png', 'shapes_001.png']
    """
    if suffix not in SUFFIXES:
        raise ValueError(f"suffix must be one of {SUFFIXES}, got {suffix!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, scene in enumerate(scenes):
        path = folder / f"{prefix}_{index:03d}{suffix}"
        options = {"quality": quality} if suffix == ".jpg" else {}
        Image.fromarray(scene.image).save(path, **options)
        paths.append(path)
    return paths


def write_ground_truth(
    scenes: Sequence[Scene],
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    format: str = "coco",
    masks: bool = True,
) -> Path:
    """Write the scenes' ground truth as a dataset (images copied into ``out/images``).

    Args:
        scenes: the scenes.
        images: each scene's image file (as written by :func:`write_images`).
        out: the dataset folder.
        format: ``coco``, ``yolo`` or ``voc``.
        masks: include the shapes' masks.

    Returns:
        ``out``.

    Example:
        >>> paths = write_images(scenes, "heldout/")  # doctest: +SKIP
        >>> write_ground_truth(scenes, paths, "heldout-truth/")  # doctest: +SKIP
    """
    from ovperc.labeling.writers import ImageItem, make_writer

    if len(scenes) != len(images):
        raise ValueError(f"got {len(scenes)} scenes but {len(images)} image files")
    out = Path(out)
    writer = make_writer(format, out, masks=masks, durable=False)
    classes = list(CLASSES)
    stems = []
    for scene, image in zip(scenes, images):
        path = Path(image)
        height, width = scene.image.shape[:2]
        item = ImageItem(path, path.stem, path.suffix, width, height)
        detections = scene.detections()
        if not masks:
            detections.mask = None
        writer.write(item, detections, classes)
        stems.append(path.stem)
    writer.finalize(classes, stems)
    return out
