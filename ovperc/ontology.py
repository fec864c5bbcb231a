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


def _key(text: str) -> str:
    """What makes two prompts or class names the same: case and spaces do not count."""
    return _clean(text).casefold()


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return value


class Ontology:
    """Maps text prompts to class names; class ids follow first appearance and never move.

    Several prompts may name one class (``{"man": "person", "woman": "person"}``). Prompts
    and class names are stripped of surrounding and repeated whitespace; empty entries of a
    list or comma-separated string are dropped. Prompts or class names that differ only in
    case or spacing (``"Red Circle, red circle"``) are one prompt or class: the first
    spelling is kept, with a warning (the detector would see one text for both).

    Args:
        mapping: class names (each is its own prompt), a ``prompt -> class`` mapping, or a
            comma-separated string such as ``"person, car, dog"``.

    Raises:
        ValueError: no prompt is left after cleaning, a mapping holds an empty prompt or
            class name, or one prompt names two classes.
        TypeError: a prompt or class name is not a string (e.g. ``None``).

    Example:
        >>> onto = Ontology({"man": "person", "woman": "person", "car": "car"})
        >>> onto.classes, onto.prompts, onto.class_ids
        (['person', 'car'], ['man', 'woman', 'car'], [0, 0, 1])
    """

    def __init__(self, mapping: str | Iterable[str] | Mapping[str, str]) -> None:
        if isinstance(mapping, str):
            pairs = [(item, item) for item in mapping.split(",")]
        elif isinstance(mapping, Mapping):
            pairs = []
            for prompt, name in mapping.items():
                prompt = _text(prompt, "a prompt")
                name = _text(name, f"the class name of prompt {prompt!r}")
                if not _clean(prompt) or not _clean(name):
                    raise ValueError(f"prompt {prompt!r} -> class {name!r}: empty prompt or "
                                     "class name; give both, e.g. {'man': 'person'}")
                pairs.append((prompt, name))
        else:
            pairs = [(_text(item, "a class name"), item) for item in mapping]
        self._prompts: list[str] = []
        self._prompt_class: list[int] = []
        self._classes: list[str] = []
        self._add(pairs, warn=True)
        if not self._prompts:
            raise ValueError(
                "the ontology is empty: give at least one class, e.g. ['person', 'car'] "
                f"(got {mapping!r})"
            )

    def _add(self, pairs: Iterable[tuple[str, str]], *, warn: bool = False) -> None:
        say = logger.warning if warn else logger.debug
        prompt_keys = [_key(p) for p in self._prompts]
        class_keys = [_key(c) for c in self._classes]
        for raw_prompt, raw_name in pairs:
            prompt, name = _clean(raw_prompt), _clean(raw_name)
            if not prompt or not name:
                continue
            if _key(name) in class_keys:
                known_name = self._classes[class_keys.index(_key(name))]
                if known_name != name and _key(prompt) not in prompt_keys:
                    say("classes %r and %r differ only in case or spaces: merged as %r",
                        known_name, name, known_name)
                name = known_name
            if _key(prompt) in prompt_keys:
                index = prompt_keys.index(_key(prompt))
                known = self._classes[self._prompt_class[index]]
                if known != name:
                    raise ValueError(
                        f"prompt {prompt!r} maps to both {known!r} and {name!r}; "
                        "a prompt can name only one class (case and spaces do not count)"
                    )
                if self._prompts[index] != prompt:
                    say("prompts %r and %r differ only in case or spaces: kept %r once",
                        self._prompts[index], prompt, self._prompts[index])
                else:
                    logger.debug("prompt %r given twice; kept once", prompt)
                continue
            if _key(name) not in class_keys:
                self._classes.append(name)
                class_keys.append(_key(name))
            self._prompts.append(prompt)
            prompt_keys.append(_key(prompt))
            self._prompt_class.append(class_keys.index(_key(name)))

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

        A ``.txt`` (or any other) file holds one class per line; ``prompt: class`` lines
        are allowed too, and ``#`` starts a comment. A YAML mapping may sit under a single
        ``classes:`` key.

        Raises:
            ValueError: the file is missing or unreadable, not valid YAML/JSON, or holds an
                empty class name (``red circle:``), a repeated prompt or a value that is
                not a class name; the message names the file and line.

        Example:
            >>> Ontology.from_file("ontology.yaml")  # doctest: +SKIP
        """
        from ovperc.ontology_file import read_pairs

        path = Path(path)
        pairs = read_pairs(path)
        try:
            return cls._from_pairs(pairs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def _from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Ontology:
        onto = cls.__new__(cls)
        onto._prompts, onto._prompt_class, onto._classes = [], [], []
        onto._add(pairs, warn=True)
        if not onto._prompts:
            raise ValueError("the ontology is empty: give at least one class")
        return onto

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
        cleaned = _clean(name)
        if cleaned in self._classes:
            return self._classes.index(cleaned)
        try:
            return [_key(c) for c in self._classes].index(_key(cleaned))
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
