from __future__ import annotations

import pytest

from ovperc import Ontology


@pytest.mark.parametrize(
    ("given", "classes", "prompts"),
    [
        (["person", "car"], ["person", "car"], ["person", "car"]),
        ("person, car ,  dog", ["person", "car", "dog"], ["person", "car", "dog"]),
        ({"man": "person", "woman": "person", "car": "car"}, ["person", "car"], ["man", "woman", "car"]),
        (["  traffic   light ", "car", "car", ""], ["traffic light", "car"], ["traffic light", "car"]),
    ],
)
def test_ontology_builds_from_lists_strings_and_dicts(given, classes, prompts):
    onto = Ontology(given)
    assert onto.classes == classes
    assert onto.prompts == prompts


def test_several_prompts_name_one_class_with_stable_ids():
    onto = Ontology({"man": "person", "woman": "person", "car": "car"})
    assert onto.class_ids == [0, 0, 1]
    assert onto.class_id("car") == 1
    assert onto.prompts_of("person") == ["man", "woman"]


@pytest.mark.parametrize("given", [[], "", " , ,", {"": ""}])
def test_empty_ontology_is_a_clear_error(given):
    with pytest.raises(ValueError, match="empty"):
        Ontology(given)


def test_conflicting_prompt_is_refused():
    with pytest.raises(ValueError, match="only one class"):
        Ontology({"man": "person"}).extend({"man": "boy"})


def test_non_string_class_is_a_type_error():
    with pytest.raises(TypeError):
        Ontology(["cat", 3])


def test_extend_keeps_existing_ids():
    base = Ontology(["cat", "dog"])
    grown = base.extend(["bird", "cat"])
    assert grown.classes == ["cat", "dog", "bird"]
    assert [grown.class_id(c) for c in base.classes] == [0, 1]
    assert base.classes == ["cat", "dog"]  # unchanged


def test_unknown_class_lists_known_ones():
    with pytest.raises(KeyError, match="known"):
        Ontology(["cat"]).class_id("dog")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("o.yaml", "man: person\nwoman: person\ncar: car\n"),
        ("o.json", '{"man": "person", "woman": "person", "car": "car"}'),
        ("o.txt", "man: person\nwoman: person  # comment\n\ncar\n"),
    ],
)
def test_from_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    onto = Ontology.from_file(path)
    assert onto.to_dict() == {"man": "person", "woman": "person", "car": "car"}


def test_equality_and_from_any():
    onto = Ontology(["a", "b"])
    assert Ontology.from_any(onto) is onto
    assert Ontology.from_any("a, b") == onto
