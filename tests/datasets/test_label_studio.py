"""``ovperc export --to label-studio``: tasks that validate against the documented schema."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import jsonschema
import numpy as np
import pytest

from ovperc.datasets.label_studio import export_label_studio, labeling_config, load_schema
from tests.datasets.helpers import SIZE, detections, make_image, write_coco_gt, write_predictions

BOXES = {
    "a.png": ([([16, 12, 64, 60], "cat"), ([80, 24, 160, 120], "dog")], [0.9, 0.4]),
    "b.png": ([], []),
}


def validate(tasks: list) -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(tasks)


def test_boxes_become_percent_rectangles_that_validate(tmp_path):
    dataset = write_predictions(tmp_path / "ds", "coco", BOXES)
    out = tmp_path / "tasks.json"

    counts = export_label_studio(dataset, out, config_out=tmp_path / "config.xml",
                                 image_root_url="http://files.local/ds")

    tasks = json.loads(out.read_text())
    validate(tasks)
    assert counts == {"tasks": 2, "rectangles": 2, "polygons": 0}
    first = tasks[0]
    assert first["data"]["image"] == "http://files.local/ds/images/a.png"
    prediction = first["predictions"][0]
    assert prediction["score"] == pytest.approx(0.65)
    cat, dog = prediction["result"]
    height, width = SIZE
    assert cat["type"] == "rectanglelabels" and cat["value"]["rectanglelabels"] == ["cat"]
    assert (cat["original_width"], cat["original_height"]) == (width, height)
    assert cat["value"]["x"] == pytest.approx(16 / width * 100, abs=1e-3)
    assert cat["value"]["y"] == pytest.approx(12 / height * 100, abs=1e-3)
    assert cat["value"]["width"] == pytest.approx(48 / width * 100, abs=1e-3)
    assert cat["value"]["height"] == pytest.approx(48 / height * 100, abs=1e-3)
    assert dog["value"]["x"] + dog["value"]["width"] == pytest.approx(100.0, abs=1e-3)
    assert dog["score"] == pytest.approx(0.4)
    assert tasks[1]["predictions"][0]["result"] == []


def test_config_names_every_class_and_region_controls(tmp_path):
    dataset = write_predictions(tmp_path / "ds", "yolo", BOXES)
    export_label_studio(dataset, tmp_path / "t.json", config_out=tmp_path / "config.xml")

    view = ElementTree.parse(tmp_path / "config.xml").getroot()
    image = view.find("Image")
    assert image is not None and image.get("value") == "$image"
    control = view.find("RectangleLabels")
    assert control is not None and control.get("toName") == image.get("name")
    assert [lab.get("value") for lab in control.findall("Label")] == ["cat", "dog"]
    tasks = json.loads((tmp_path / "t.json").read_text())
    names = {r["from_name"] for t in tasks for r in t["predictions"][0]["result"]}
    assert names <= {c.get("name") for c in view if c.tag.endswith("Labels")}


def test_masks_become_polygons_inside_their_box(tmp_path):
    from ovperc.labeling.writers import ImageItem, make_writer

    writer = make_writer("coco", tmp_path / "ds", masks=True)
    det = detections([([20, 10, 60, 50], "cat")], [0.8])
    det.mask = np.zeros((1, *SIZE), dtype=bool)
    det.mask[0, 10:50, 20:60] = True
    src = make_image(tmp_path / "src" / "a.png")
    writer.write(ImageItem(src, "a", ".png", SIZE[1], SIZE[0]), det, ["cat", "dog"])
    writer.finalize(["cat", "dog"], ["a"])

    counts = export_label_studio(tmp_path / "ds", tmp_path / "t.json", config_out=tmp_path / "c.xml")

    tasks = json.loads((tmp_path / "t.json").read_text())
    validate(tasks)
    assert counts["polygons"] == 1
    polygon = next(r for r in tasks[0]["predictions"][0]["result"] if r["type"] == "polygonlabels")
    assert polygon["value"]["polygonlabels"] == ["cat"]
    xs = [p[0] * SIZE[1] / 100 for p in polygon["value"]["points"]]
    ys = [p[1] * SIZE[0] / 100 for p in polygon["value"]["points"]]
    assert 19 <= min(xs) and max(xs) <= 61 and 9 <= min(ys) and max(ys) <= 51
    assert ElementTree.parse(tmp_path / "c.xml").getroot().find("PolygonLabels") is not None


def test_default_image_url_uses_label_studio_local_files(tmp_path):
    dataset = write_coco_gt(tmp_path / "my data", {"a b.png": [([1, 1, 9, 9], "cat")]})
    export_label_studio(dataset, tmp_path / "t.json")
    tasks = json.loads((tmp_path / "t.json").read_text())
    validate(tasks)
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=my%20data/images/a%20b.png"


def test_schema_rejects_pixel_coordinates():
    bad = [{"data": {"image": "x.png"}, "predictions": [{"result": [{
        "from_name": "box", "to_name": "image", "type": "rectanglelabels",
        "original_width": 640, "original_height": 480,
        "value": {"x": 320, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["cat"]}}]}]}]
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


def test_labeling_config_escapes_class_names():
    xml = labeling_config(['a "quoted" <class>', "b & c"], polygons=True)
    view = ElementTree.fromstring(xml)
    assert [lab.get("value") for lab in view.find("PolygonLabels").findall("Label")] == [
        'a "quoted" <class>', "b & c"]


def test_cli_export_writes_tasks_and_config(tmp_path, capsys):
    from ovperc.cli import main

    dataset = write_predictions(tmp_path / "ds", "voc", BOXES)
    out = tmp_path / "review" / "tasks.json"
    assert main(["export", str(dataset), "--to", "label-studio", "--out", str(out)]) == 0
    validate(json.loads(out.read_text()))
    assert (tmp_path / "review" / "tasks.config.xml").is_file()
    assert "2 tasks" in capsys.readouterr().out
