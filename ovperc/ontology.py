"""Prompts -> class names, with stable class ids."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Union

logger = logging.getLogger(__name__)

ClassesLike = Union["Ontology", str, Iterable[str], Mapping[str, str]]


def _clean(text: str) -> str:
    return " ".join(str(text).split())


class Ontology:
    """Maps text prompts to class names; class ids follow first appearance and never move.

    Several prompts may name one class (``{"man": "person", "woman": "person"}``). Prompts
    and class names are stripped of surrounding and repeated whitespace; empty entries are
    dropped and repeated prompts are kept once.

    Args:
        mapping: class names (each is its own prompt), a ``prompt -> class`` mapping, or a
            comma-separated string such as ``"person, car, dog"``.

    Raises:
        ValueError: no prompt is left after cleaning.

    Example:
        >>> onto = Ontology({"man": "person", "woman": "person", "car": "car"})
        >>> onto.classes, onto.prompts, onto.class_ids
        (['person', 'car'], ['man', 'woman', 'car'], [0, 0, 1])
    """

    def __init__(self, mapping: str | Iterable[str] | Mapping[str, str]) -> None:
        if isinstance(mapping, str):
            pairs = [(item, item) for item in mapping.split(",")]
        elif isinstance(mapping, Mapping):
            pairs = [(str(prompt), str(name)) for prompt, name in mapping.items()]
        else:
            pairs = []
            for item in mapping:
                if not isinstance(item, str):
                    raise TypeError(f"class names must be strings, got {type(item).__name__}")
                pairs.append((item, item))
        self._prompts: list[str] = []
        self._prompt_class: list[int] = []
        self._classes: list[str] = []
        self._add(pairs)
        if not self._prompts:
            raise ValueError(
                "the ontology is empty: give at least one class, e.g. ['person', 'car'] "
                f"(got {mapping!r})"
            )

    def _add(self, pairs: Iterable[tuple[str, str]]) -> None:
        for raw_prompt, raw_name in pairs:
            prompt, name = _clean(raw_prompt), _clean(raw_name)
            if not prompt or not name:
                continue
            if prompt in self._prompts:
                known = self._classes[self._prompt_class[self._prompts.index(prompt)]]
                if known != name:
                    raise ValueError(
                        f"prompt {prompt!r} maps to both {known!r} and {name!r}; "
                        "a prompt can name only one class"
                    )
                logger.debug("prompt %r given twice; kept once", prompt)
                continue
            if name not in self._classes:
                self._classes.append(name)
            self._prompts.append(prompt)
            self._prompt_class.append(self._classes.index(name))

    @classmethod
    def from_any(cls, classes: ClassesLike) -> Ontology:
        """Build an ontology from whatever the user passed (or return it unchanged).

        Example:
            >>> Ontology.from_any("cat, dog").classes
            ['cat', 'dog']
        """
        return classes if isinstance(classes, Ontology) else cls(classes)

    @classmethod
    def from_file(cls, path: str | Path) -> Ontology:
        """Read an ontology from YAML/JSON (``prompt: class`` mapping or a list) or text.

        A ``.txt`` file holds one class per line; ``prompt: class`` lines are allowed too.

        Example:
            >>> Ontology.from_file("ontology.yaml")  # doctest: +SKIP
        """
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            data = yaml.safe_load(text)
            if isinstance(data, Mapping) and "classes" in data and len(data) == 1:
                data = data["classes"]
            if not isinstance(data, (Mapping, list)):
                raise ValueError(f"{path}: expected a prompt -> class mapping or a list")
            return cls(data)
        pairs = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            prompt, _, name = line.partition(":")
            pairs.append((prompt, name or prompt))
        return cls(dict(pairs))

    @property
    def classes(self) -> list[str]:
        """Class names; the index of a name is its class id."""
        return list(self._classes)

    @property
    def prompts(self) -> list[str]:
        """Text prompts, in order."""
        return list(self._prompts)

    @property
    def class_ids(self) -> list[int]:
        """Class id of each prompt, parallel to :attr:`prompts`."""
        return list(self._prompt_class)

    def class_id(self, name: str) -> int:
        """Id of a class name.

        Raises:
            KeyError: the class is not in the ontology.
        """
        try:
            return self._classes.index(_clean(name))
        except ValueError:
            raise KeyError(f"unknown class {name!r}; known: {self._classes}") from None

    def prompts_of(self, name: str) -> list[str]:
        """All prompts that name a class.

        Example:
            >>> Ontology({"man": "person", "woman": "person"}).prompts_of("person")
            ['man', 'woman']
        """
        cid = self.class_id(name)
        return [p for p, c in zip(self._prompts, self._prompt_class) if c == cid]

    def extend(self, classes: ClassesLike) -> Ontology:
        """A new ontology with extra prompts/classes appended; existing ids do not move.

        Example:
            >>> Ontology(["cat"]).extend(["dog", "cat"]).classes
            ['cat', 'dog']
        """
        other = Ontology.from_any(classes)
        merged = Ontology.__new__(Ontology)
        merged._prompts, merged._prompt_class = list(self._prompts), list(self._prompt_class)
        merged._classes = list(self._classes)
        merged._add(
            (p, other._classes[c]) for p, c in zip(other._prompts, other._prompt_class)
        )
        return merged

    def to_dict(self) -> dict[str, str]:
        """``prompt -> class`` mapping (JSON/YAML ready)."""
        return {p: self._classes[c] for p, c in zip(self._prompts, self._prompt_class)}

    def __len__(self) -> int:
        return len(self._classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ontology) and self.to_dict() == other.to_dict() and (
            self._classes == other._classes
        )

    def __hash__(self) -> int:
        return hash((tuple(self._prompts), tuple(self._prompt_class), tuple(self._classes)))

    def __repr__(self) -> str:
        if self._prompts == self._classes:
            return f"Ontology({self._classes!r})"
        return f"Ontology({self.to_dict()!r})"
