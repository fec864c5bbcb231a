"""What the page suggests for the models it runs: examples, the classes placeholder, and
which classes the models know.

Open-vocabulary models (the default Grounding DINO, SAM and CLIP) take any class name, so
the page suggests everyday ones. Toy models shipped with the package (``shapes-tiny``)
know a handful of classes only; the page says which and offers images they were made
for. The guide is chosen from the models the pipeline loads (:func:`guide_for`), not from
a preset name, so a preset with one model replaced gets the guide of what it now runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ovperc.demo.examples import write_examples, write_shapes_examples
from ovperc.shapes import CLASSES as SHAPES_CLASSES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoGuide:
    """What the page suggests for one kind of model.

    Attributes:
        name: a short name for logs and tests (``"open-vocabulary"``, ``"shapes-tiny"``).
        placeholder: the grey text of the empty classes box.
        example_classes: classes suggested with an example image that comes without any.
        known_classes: the only classes the models can find; empty for open vocabulary.
        write_examples: draws the example images into a folder and returns
            ``(path, classes)`` pairs.

    Example:
        >>> SHAPES_TINY.unknown(["Red circle", "house"])
        ['house']
    """

    name: str
    placeholder: str
    example_classes: str
    known_classes: tuple[str, ...] = ()
    write_examples: Callable[[Path], list[tuple[Path, str]]] = write_examples

    @property
    def note(self) -> str:
        """A line for the page saying which classes the models know (``""``: any)."""
        if not self.known_classes:
            return ""
        return (f"These toy models know only: {', '.join(self.known_classes)}. They were trained "
                f"on synthetic scenes like the examples and find nothing else.")

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names the models do not know (case and spacing ignored); empty for open vocabulary."""
        if not self.known_classes:
            return []
        known = {_normal(name) for name in self.known_classes}
        return [name for name in names if _normal(name) not in known]


def split_classes(text: str | None) -> list[str]:
    """Class names from a textbox: separated by commas or new lines, blanks dropped.

    Example:
        >>> split_classes("cat, dog\\n  red car ,")
        ['cat', 'dog', 'red car']
    """
    if not text:
        return []
    names = (" ".join(part.split()) for part in re.split(r"[,\n;]", text))
    return list(dict.fromkeys(name for name in names if name))


def _normal(name: str) -> str:
    return " ".join(name.lower().split())


#: Open-vocabulary models: everyday classes.
OPEN_VOCABULARY = DemoGuide(
    name="open-vocabulary",
    placeholder="person, bicycle, traffic light",
    example_classes="house, tree, sun",
)

#: The ``shapes-tiny`` toy models (``ovperc/data/shapes-tiny``): the four shape classes.
SHAPES_TINY = DemoGuide(
    name="shapes-tiny",
    placeholder=", ".join(SHAPES_CLASSES),
    example_classes=", ".join(SHAPES_CLASSES),
    known_classes=SHAPES_CLASSES,
    write_examples=write_shapes_examples,
)

#: Model folders shipped under ``ovperc/data`` -> the guide for a pipeline that uses them.
PACKAGED_GUIDES: dict[str, DemoGuide] = {"shapes-tiny": SHAPES_TINY}


def model_name(stage: Any) -> str | None:
    """The model a stage loads: its ``model_name``, or its CLIP model's ``spec``.

    Example:
        >>> model_name(GroundingDinoDetector("./my-gdino"))  # doctest: +SKIP
        './my-gdino'
    """
    name = getattr(stage, "model_name", None)
    if not isinstance(name, str):
        name = getattr(getattr(stage, "clip", None), "spec", None)
    return name if isinstance(name, str) else None


def packaged_model_set(name: str | None) -> str | None:
    """The folder under ``ovperc/data`` that holds a model path (``"shapes-tiny"``), or ``None``.

    Example:
        >>> from ovperc.presets import resolve_packaged
        >>> packaged_model_set(resolve_packaged("ovperc-data:shapes-tiny/grounding-dino"))
        'shapes-tiny'
        >>> packaged_model_set("IDEA-Research/grounding-dino-tiny") is None
        True
    """
    if not name:
        return None
    data = Path(str(resources.files("ovperc").joinpath("data"))).resolve()
    try:
        relative = Path(name).expanduser().resolve().relative_to(data)
    except (ValueError, OSError):
        return None
    return relative.parts[0] if len(relative.parts) > 1 else None


def guide_for(pipeline: Any) -> DemoGuide:
    """The guide for the models a pipeline runs.

    The detector decides (it finds the boxes); a pipeline without one is guided by its
    tagger. A model from a folder shipped with the package that has a guide in
    :data:`PACKAGED_GUIDES` gets that guide; any other model is open vocabulary.

    Example:
        >>> guide_for(Pipeline.from_preset("shapes-tiny")).name  # doctest: +SKIP
        'shapes-tiny'
        >>> guide_for(Pipeline.from_preset("default")).name  # doctest: +SKIP
        'open-vocabulary'
    """
    stage = pipeline.detector if pipeline.detector is not None else pipeline.tagger
    guide = PACKAGED_GUIDES.get(packaged_model_set(model_name(stage)) or "", OPEN_VOCABULARY)
    logger.debug("demo guide %s for %r", guide.name, stage)
    return guide
