"""Per-class confidence thresholds: read, write and apply ``thresholds.yaml``.

``ovperc tune`` writes the file from hand labels; ``ovperc label --thresholds`` and
``Pipeline(class_thresholds=...)`` apply it. The schema (every key optional)::

    # comments are free
    default: 0.42        # for every class not listed below (omit: those boxes are kept)
    classes:             # class name -> threshold
      dog: 0.35
      traffic light: 0.6

Thresholds are numbers in [0, 1]; a box is kept when ``confidence >= threshold`` of its
class (up to float32 rounding: a score stored as 0.34999999 passes 0.35). Class names
are matched after collapsing whitespace, like the ontology's names.

Example:
    >>> t = ClassThresholds({"dog": 0.35}, default=0.42)
    >>> t.threshold("dog"), t.threshold("cat")
    (0.35, 0.42)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import supervision as sv

#: the first line of every file ``ovperc tune`` writes (it may overwrite only such a file).
HEADER = "# ovperc thresholds"
#: slack in ``confidence >= threshold`` for scores stored as float32.
TOLERANCE = 1e-6
_KEYS = ("default", "classes")


def passes(confidence: Any, threshold: Any) -> np.ndarray:
    """``confidence >= threshold`` elementwise, up to :data:`TOLERANCE`.

    Example:
        >>> passes(np.float32(0.35), 0.35).item()
        True
    """
    return np.asarray(confidence, dtype=np.float64) >= np.asarray(threshold, dtype=np.float64) - TOLERANCE


class ThresholdsError(ValueError):
    """A malformed thresholds file; the message names the file and line."""


def _name(text: Any) -> str:
    return " ".join(str(text).split())


def _check_value(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ClassThresholds:
    """Confidence thresholds per class, with an optional default for the other classes.

    Args:
        classes: class name -> threshold in [0, 1].
        default: threshold of every class not in ``classes`` (``None``: keep their boxes).

    Raises:
        ValueError: a threshold outside [0, 1], an empty class name, or two names that are
            the same after collapsing whitespace.

    Example:
        >>> ClassThresholds({"dog": 0.4}).threshold("cat") is None
        True
    """

    classes: Mapping[str, float] = field(default_factory=dict)
    default: float | None = None

    def __post_init__(self) -> None:
        cleaned: dict[str, float] = {}
        for raw, value in dict(self.classes).items():
            name = _name(raw)
            if not name:
                raise ValueError(f"class thresholds need class names, got {raw!r}")
            if name in cleaned:
                raise ValueError(f"class {name!r} is given twice")
            cleaned[name] = _check_value(value, f"the threshold of {name!r}")
        object.__setattr__(self, "classes", cleaned)
        if self.default is not None:
            object.__setattr__(self, "default", _check_value(self.default, "the default threshold"))

    @classmethod
    def from_any(cls, value: ClassThresholds | Mapping[str, float]) -> ClassThresholds:
        """A :class:`ClassThresholds` as is, or one from a ``class -> threshold`` mapping.

        Example:
            >>> ClassThresholds.from_any({"dog": 0.4}).classes
            {'dog': 0.4}
        """
        if isinstance(value, ClassThresholds):
            return value
        if isinstance(value, Mapping):
            return cls(dict(value))
        raise TypeError(f"class thresholds must be a class -> threshold mapping or ClassThresholds, "
                        f"got {type(value).__name__}")

    def threshold(self, name: str) -> float | None:
        """The threshold of class ``name`` (its own, else the default, else ``None``).

        Example:
            >>> ClassThresholds({"dog": 0.4}, default=0.3).threshold("cat")
            0.3
        """
        return self.classes.get(_name(name), self.default)

    def check_classes(self, known: Iterable[str]) -> None:
        """Refuse thresholds for classes that are not among ``known`` (the classes detected).

        Raises:
            ValueError: the message lists the unknown names and the known classes.

        Example:
            >>> ClassThresholds({"dog": 0.4}).check_classes(["dog", "cat"])
        """
        known = [_name(k) for k in known]
        unknown = [n for n in self.classes if n not in known]
        if unknown:
            raise ValueError(f"thresholds given for classes that are not detected: {unknown}; "
                             f"the classes are {known}")

    def filter(self, det: sv.Detections) -> sv.Detections:
        """Drop the boxes whose confidence is below their class's threshold.

        Boxes need ``data["class_name"]``; boxes without a confidence are kept.

        Example:
            >>> kept = ClassThresholds({"dog": 0.5}).filter(detections)  # doctest: +SKIP
        """
        if len(det) == 0 or det.confidence is None or "class_name" not in det.data:
            return det
        limits = np.array([self.threshold(str(n)) for n in det.data["class_name"]], dtype=object)
        limits = np.array([-np.inf if t is None else t for t in limits], dtype=np.float64)
        keep = passes(det.confidence, limits)
        return det if keep.all() else det[keep]

    def to_dict(self) -> dict[str, Any]:
        """The file's content as a dict (``default`` only when set).

        Example:
            >>> ClassThresholds({"dog": 0.4}, default=0.3).to_dict()
            {'default': 0.3, 'classes': {'dog': 0.4}}
        """
        data: dict[str, Any] = {} if self.default is None else {"default": self.default}
        data["classes"] = dict(self.classes)
        return data


def write_thresholds(path: str | Path, thresholds: ClassThresholds, *, comments: Iterable[str] = ()
                     ) -> None:
    """Write ``thresholds.yaml`` atomically, starting with :data:`HEADER` and ``comments``.

    Example:
        >>> write_thresholds("thresholds.yaml", ClassThresholds({"dog": 0.4}, default=0.3))  # doctest: +SKIP
    """
    import yaml

    from ovperc.atomic import atomic_write_text

    lines = [HEADER, *(f"# {c}" for c in comments)]
    body = yaml.safe_dump(thresholds.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, "\n".join(lines) + "\n" + body, durable=False)


def read_thresholds(path: str | Path) -> ClassThresholds:
    """Read and validate a thresholds file (see the module docstring for its schema).

    Raises:
        ThresholdsError: the file is missing, not YAML, or not of the schema; the message
            names the file and the line.

    Example:
        >>> read_thresholds("thresholds.yaml").threshold("dog")  # doctest: +SKIP
        0.35
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdsError(f"{path}: cannot read the thresholds file ({exc})") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ThresholdsError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc

    def fail(node: Any, message: str) -> ThresholdsError:
        return ThresholdsError(f"{path}:{node.start_mark.line + 1}: {message}")

    def number(node: Any, what: str) -> float:
        if not isinstance(node, yaml.ScalarNode):
            raise fail(node, f"{what} must be a number in [0, 1]")
        value = yaml.constructor.SafeConstructor().construct_object(node)
        try:
            return _check_value(value, what)
        except ValueError as exc:
            raise fail(node, str(exc)) from None

    if root is None:
        raise ThresholdsError(f"{path}: empty; expected 'default: T' and/or 'classes:' "
                              "with 'name: T' lines")
    if not isinstance(root, yaml.MappingNode):
        raise fail(root, "expected a mapping with 'default' and/or 'classes'")
    default: float | None = None
    classes: dict[str, float] = {}
    seen: set[str] = set()
    for key_node, value_node in root.value:
        key = str(key_node.value)
        if key not in _KEYS or key in seen:
            raise fail(key_node, f"{key!r} is {'repeated' if key in seen else 'not a known key'}; "
                                 f"the keys are {list(_KEYS)}")
        seen.add(key)
        if key == "default":
            default = number(value_node, "the default threshold")
            continue
        if value_node.tag == "tag:yaml.org,2002:null":
            continue  # 'classes:' with nothing under it
        if not isinstance(value_node, yaml.MappingNode):
            raise fail(value_node, "'classes' must map class names to thresholds ('dog: 0.4')")
        for name_node, t_node in value_node.value:
            name = _name(name_node.value)
            if not isinstance(name_node, yaml.ScalarNode) or not name:
                raise fail(name_node, "a class name must be a non-empty string")
            if name in classes:
                raise fail(name_node, f"class {name!r} is given twice")
            classes[name] = number(t_node, f"the threshold of {name!r}")
    return ClassThresholds(classes, default=default)
