"""Batch folder labelling: scan a folder, run the chain, write a training dataset.

The pieces are small and reusable on their own: :mod:`~ovperc.labeling.scan` lists images,
:mod:`~ovperc.labeling.writers` writes one image's annotations atomically in a dataset
format, :mod:`~ovperc.labeling.manifest` records what is done so a run resumes, and
:mod:`~ovperc.labeling.runner` ties them to a :class:`~ovperc.Pipeline`.

Example:
    >>> from ovperc.labeling import label_folder  # doctest: +SKIP
    >>> report = label_folder(pipe, "photos/", "dataset/", classes="person, car")  # doctest: +SKIP
"""

from __future__ import annotations

from ovperc.lazy import lazy_exports

_LAZY = {
    "label_folder": "ovperc.labeling.runner",
    "RayEngine": "ovperc.labeling.ray_engine",
    "Report": "ovperc.labeling.report",
    "scan_images": "ovperc.labeling.scan",
    "ScanEntry": "ovperc.labeling.scan",
    "Manifest": "ovperc.labeling.manifest",
    "ManifestMismatchError": "ovperc.labeling.manifest",
    "make_writer": "ovperc.labeling.writers",
    "FORMATS": "ovperc.labeling.writers",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
