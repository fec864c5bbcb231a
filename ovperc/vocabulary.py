"""Which classes each image is asked about, and how boxes get their class names and ids.

The pipeline decides class ids once, on the way out: a detector answers with the index of
the prompt it matched; :func:`to_classes` turns that into the run ontology's class name and
id, so two prompts of one class share its id, and ids stay stable while tags add classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ovperc.ontology import Ontology

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.types import Tag


def empty_detections() -> sv.Detections:
    """No detections, with every field the chain fills (ids, scores, names, prompts)."""
    import supervision as sv

    det = sv.Detections.empty()
    det.class_id = np.zeros(0, dtype=int)
    det.confidence = np.zeros(0, dtype=np.float32)
    det.data["class_name"] = np.array([], dtype=object)
    return det


def inside(det: sv.Detections, image: np.ndarray) -> sv.Detections:
    """Given boxes clipped to the image (a box reaching past an edge is cut at it)."""
    if not len(det):
        return det
    height, width = image.shape[:2]
    det = det[:]
    det.xyxy = np.clip(np.asarray(det.xyxy, dtype=np.float64), 0, [width, height, width, height])
    return det


def vocabularies(
    classes: Ontology | None,
    run: Ontology | None,
    tags: list[list[Tag]],
    tag_merge: bool,
    *,
    tagger: bool,
    detector: bool,
    need: bool,
) -> tuple[Ontology | None, list[Ontology | None]]:
    """The run ontology (stable ids) and each image's own vocabulary.

    Args:
        classes: the user's classes (``None``: the tags decide).
        run: the run's ontology so far (its ids never move).
        tags: each image's tags.
        tag_merge: also ask for the tags when classes are given.
        tagger, detector: whether the chain has those stages.
        need: classes are needed (no boxes were given).

    Example:
        >>> run, local = vocabularies(Ontology(["cat"]), None, [[]], False, tagger=False,
        ...                           detector=True, need=True)
        >>> run.classes, local[0].classes
        (['cat'], ['cat'])
    """
    if classes is not None and not (tag_merge and tagger):
        return (run if run is not None else classes), [classes] * len(tags)
    if classes is None and not tagger and need and detector:
        raise ValueError(
            "no classes given and no tagger to find any: pass classes=[...] "
            "or use a preset with a tagger"
        )
    run = run if run is not None else classes
    local: list[Ontology | None] = []
    for tag_list in tags:
        names = [t.name for t in tag_list]
        if classes is not None:  # a tag that is already a user prompt keeps the user's class
            names = [name for name in names if name not in classes.prompts]
            vocabulary = classes.extend(names) if names else classes
        else:
            vocabulary = Ontology(names) if names else None
        if vocabulary is not None:
            run = vocabulary if run is None else run.extend(vocabulary)
        local.append(vocabulary)
    return run, local


def to_classes(det: sv.Detections, local: Ontology | None, run: Ontology | None) -> sv.Detections:
    """Prompt indices -> run ontology class ids and names."""
    if local is None or run is None or len(det) == 0:
        if len(det):
            return empty_detections()
        det.data["class_name"] = np.array([], dtype=object)
        det.data.setdefault("prompt", np.array([], dtype=object))
        det.class_id = np.zeros(0, dtype=int)
        if det.confidence is None:
            det.confidence = np.zeros(0, dtype=np.float32)
        return det
    prompt_idx = np.asarray(det.class_id, dtype=int)
    names = np.array([local.classes[local.class_ids[i]] for i in prompt_idx], dtype=object)
    det.data["prompt"] = np.array([local.prompts[i] for i in prompt_idx], dtype=object)
    det.data["class_name"] = names
    det.class_id = np.array([run.class_id(name) for name in names], dtype=int)
    return det


def named(det: sv.Detections, run: Ontology | None) -> sv.Detections:
    """Given detections: fill class names from ids (or ids from names)."""
    det = det[:] if len(det) else empty_detections()
    if len(det) == 0:
        return det
    if det.confidence is None:
        det.confidence = np.ones(len(det), dtype=np.float32)
    if "class_name" not in det.data and run is not None and det.class_id is not None:
        det.data["class_name"] = np.array([run.classes[i] for i in det.class_id], dtype=object)
    if det.class_id is None:
        det.class_id = np.zeros(len(det), dtype=int)
    return det


def sync_ids(det: sv.Detections, run: Ontology) -> sv.Detections:
    """After re-labelling, class ids follow the (possibly new) class names."""
    if len(det) and "class_name" in det.data:
        det.class_id = np.array([run.class_id(n) for n in det.data["class_name"]], dtype=int)
    return det
