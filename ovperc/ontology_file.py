"""Ontology files (YAML, JSON, text) -> ``(prompt, class)`` pairs, or an error naming the line.

Every mistake a person can make in such a file is reported with the file and, where the
format keeps it, the line: a syntax error, an empty class (``red circle:`` reads as no
class, not as a class named ``None``), a prompt given twice, a list where a class name
belongs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Pairs = list[tuple[str, str]]

_NULL = "tag:yaml.org,2002:null"
_EXPECTED = ("expected a 'prompt: class' mapping (e.g. 'man: person'), a list of class names, "
             "or either under a single 'classes:' key")


class OntologyFileError(ValueError):
    """A mistake in an ontology file; the message starts with ``file:line:``.

    Example:
        >>> str(OntologyFileError("o.yaml", 3, "prompt 'red circle' has no class"))
        "o.yaml:3: prompt 'red circle' has no class"
    """

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


def read_pairs(path: str | Path) -> Pairs:
    """The ``(prompt, class)`` pairs of an ontology file, in file order.

    ``.yaml``/``.yml`` and ``.json`` files hold a mapping or a list; any other file holds
    one ``class`` or ``prompt: class`` per line (``#`` starts a comment).

    Raises:
        OntologyFileError: (a ``ValueError``) the file cannot be read or holds a mistake.

    Example:
        >>> read_pairs("ontology.yaml")  # doctest: +SKIP
        [('man', 'person'), ('woman', 'person'), ('car', 'car')]
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OntologyFileError(path, None, "ontology file not found") from None
    except IsADirectoryError:
        raise OntologyFileError(path, None, "is a folder, not an ontology file") from None
    except UnicodeDecodeError as error:
        raise OntologyFileError(path, None, f"not UTF-8 text ({error.reason} at byte "
                                            f"{error.start})") from None
    except OSError as error:
        raise OntologyFileError(path, None, f"cannot read ({error.strerror or error})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_pairs(path, text)
    if suffix in (".yaml", ".yml"):
        return _yaml_pairs(path, text)
    return _text_pairs(path, text)


def _text_pairs(path: Path, text: str) -> Pairs:
    pairs: Pairs = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        prompt, colon, name = (part.strip() for part in line.partition(":"))
        if colon and not name:
            raise OntologyFileError(path, number, f"prompt {prompt!r} has no class after ':' "
                                                  "(write 'prompt: class', or just the class)")
        if not prompt:
            raise OntologyFileError(path, number, f"class {name!r} has no prompt before ':'")
        if colon:
            _check_repeat(path, number, prompt, seen)
        pairs.append((prompt, name or prompt))
    return pairs


def _check_repeat(path: Path, line: int | None, prompt: str, seen: dict[str, int]) -> None:
    key = " ".join(prompt.split())
    if key in seen:
        first = f"line {seen[key]}" if seen[key] else "above"
        raise OntologyFileError(path, line, f"prompt {prompt!r} is given again (first on {first}); "
                                            "a prompt names one class: give it once")
    seen[key] = line or 0


def _yaml_pairs(path: Path, text: str) -> Pairs:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else mark.line + 1
        problem = " ".join(p for p in (error.context, error.problem) if p)
        raise OntologyFileError(path, line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise OntologyFileError(path, None, f"not valid YAML: {error}") from None
    if root is None:
        raise OntologyFileError(path, None, f"the file is empty; {_EXPECTED}")
    if (isinstance(root, yaml.MappingNode) and len(root.value) == 1
            and getattr(root.value[0][0], "value", None) == "classes"):
        root = root.value[0][1]
    pairs: Pairs = []
    seen: dict[str, int] = {}
    if isinstance(root, yaml.MappingNode):
        _yaml_mapping(path, root, pairs, seen)
    elif isinstance(root, yaml.SequenceNode):
        for item in root.value:
            if isinstance(item, yaml.MappingNode):  # "- man: person"
                _yaml_mapping(path, item, pairs, seen)
                continue
            name = _yaml_scalar(path, item, "a list item")
            pairs.append((name, name))
    else:
        raise OntologyFileError(path, _line(root), _EXPECTED)
    return pairs


def _yaml_mapping(path: Path, node: Any, pairs: Pairs, seen: dict[str, int]) -> None:
    for key, value in node.value:
        prompt = _yaml_scalar(path, key, "a prompt")
        if _is_null(value):
            raise OntologyFileError(path, _line(key), f"prompt {prompt!r} has no class (an empty "
                                                      f"value); write '{prompt}: CLASS'")
        name = _yaml_scalar(path, value, f"the class of prompt {prompt!r}")
        _check_repeat(path, _line(key), prompt, seen)
        pairs.append((prompt, name))


def _yaml_scalar(path: Path, node: Any, what: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
        raise OntologyFileError(path, _line(node), f"{what} is {kind}, not a text; {_EXPECTED}")
    if _is_null(node) or not str(node.value).strip():
        raise OntologyFileError(path, _line(node), f"{what} is empty")
    return str(node.value)


def _is_null(node: Any) -> bool:
    return getattr(node, "tag", None) == _NULL


def _line(node: Any) -> int | None:
    mark = getattr(node, "start_mark", None)
    return None if mark is None else mark.line + 1


def _json_pairs(path: Path, text: str) -> Pairs:
    seen: dict[str, int] = {}

    def no_repeats(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for key, _ in items:
            _check_repeat(path, None, key, seen)
        return dict(items)

    try:
        data = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as error:
        raise OntologyFileError(path, error.lineno, f"not valid JSON: {error.msg} "
                                                    f"(column {error.colno})") from None
    if isinstance(data, dict) and len(data) == 1 and "classes" in data:
        data = data["classes"]
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = []
        for item in data:
            if isinstance(item, dict):
                items.extend(item.items())
            else:
                items.append((item, item))
    else:
        raise OntologyFileError(path, None, _EXPECTED)
    pairs: Pairs = []
    for prompt, name in items:
        if not isinstance(prompt, str) or not prompt.strip():
            raise OntologyFileError(path, None, f"{prompt!r} is not a prompt (a non-empty text)")
        if not isinstance(name, str) or not name.strip():
            raise OntologyFileError(path, None, f"prompt {prompt!r} has no class name "
                                                f"(got {json.dumps(name)})")
        pairs.append((prompt, name))
    return pairs
