"""The demo app over HTTP, in process: upload, run, downloads, and what the server refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ovperc
from tests.demo.conftest import SHAPES_CLASSES, make_pipeline

gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from ovperc.demo import build_app  # noqa: E402


def _client(pipeline: ovperc.Pipeline, **kwargs: Any) -> tuple[TestClient, Any]:
    app = build_app(pipeline, **kwargs)
    server = gr.mount_gradio_app(FastAPI(), app, path="", max_file_size="50mb")
    return TestClient(server), app


@pytest.fixture(scope="module")
def served(examples: list[tuple[Path, str]]) -> Iterator[tuple[TestClient, Any, ovperc.Pipeline]]:
    pipeline = make_pipeline()
    client, app = _client(pipeline, examples=examples)
    with client:
        yield client, app, pipeline


def _upload(client: TestClient, content: bytes, name: str) -> dict[str, Any]:
    response = client.post("/gradio_api/upload", files={"files": (name, content, "image/png")})
    assert response.status_code == 200, response.text
    [path] = response.json()
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def _run(client: TestClient, upload: dict | None, classes: str, *, tagging: bool = True,
         detect_tags: bool = False, segment: bool = True, classify: bool = True,
         mode: str = "rescore", box: float = 0.3, text: float = 0.25) -> list[Any]:
    response = client.post("/gradio_api/run/run", json={
        "data": [upload, classes, tagging, detect_tags, segment, classify, mode, box, text]})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_run_returns_the_pipelines_result(served, shapes_path: Path):
    client, _, pipeline = served
    expected = pipeline(shapes_path, classes=SHAPES_CLASSES).to_dict()
    status, image, tags, table, result, json_button, mask_button = _run(
        client, _upload(client, shapes_path.read_bytes(), "shapes.png"), SHAPES_CLASSES)
    assert status.startswith("**Found 3 objects of 3 classes**")
    assert result["detections"] == json.loads(json.dumps(expected["detections"]))
    assert [row[1] for row in table["data"]] == ["red square", "blue circle", "yellow triangle"]
    assert tags["label"] == "blue circle"
    downloaded = client.get(json_button["value"]["url"].replace("http://testserver", ""))
    assert downloaded.status_code == 200
    assert json.loads(downloaded.content)["detections"] == result["detections"]
    assert client.get(mask_button["value"]["url"].replace("http://testserver", "")).status_code == 200
    assert client.get(image["url"].replace("http://testserver", "")).status_code == 200


@pytest.mark.parametrize(("content", "name", "message"), [
    (b"just some text", "notes.png", "notes.png cannot be used: not an image"),
    (b"", "empty.png", "empty.png cannot be used: empty file"),
])
def test_bad_upload_is_a_message(served, content: bytes, name: str, message: str):
    client, _, _ = served
    status, image, *_rest, json_button, mask_button = _run(
        client, _upload(client, content, name), "red")
    assert status.startswith("**Cannot run:**") and message in status
    assert image is None and json_button["interactive"] is False


def test_no_image_and_too_many_classes_are_messages(served, shapes_path: Path):
    client, _, _ = served
    assert "Upload an image" in _run(client, None, "red")[0]
    upload = _upload(client, shapes_path.read_bytes(), "shapes.png")
    many = ", ".join(f"class {i}" for i in range(1001))
    assert "1,001 classes given" in _run(client, upload, many)[0]
    assert "switch tagging on" in _run(client, upload, "", tagging=False)[0]


def test_huge_image_is_a_message(served, tmp_path: Path):
    from PIL import Image

    client, _, _ = served
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 8_000)).save(path)
    status = _run(client, _upload(client, path.read_bytes(), "huge.png"), "red")[0]
    assert "huge.png cannot be used: image is 10000x8000" in status
    assert status.endswith("over the limit of 40,000,000.")


@pytest.mark.parametrize("target", ["/etc/passwd", "PYPROJECT", "WORKDIR"])
def test_server_serves_no_file_it_did_not_create(served, target: str, shapes_path: Path):
    client, app, _ = served
    if target == "PYPROJECT":
        target = str(Path(__file__).resolve().parents[2] / "pyproject.toml")
    elif target == "WORKDIR":  # result files are served from Gradio's cache copy only
        target = str(app.ovperc_runner.write_files(
            ovperc.Pipeline(detector=make_pipeline().detector)(shapes_path, classes="red"))[0])
    for url in (f"/gradio_api/file={target}", f"/file={target}"):
        response = client.get(url)
        assert response.status_code in (403, 404), (url, response.status_code)
        assert b"root:" not in response.content


def test_queue_has_the_documented_limit(served):
    _, app, _ = served
    assert app._queue.default_concurrency_limit == 1
    [run] = [fn for fn in app.fns.values() if fn.api_name == "run"]
    assert run.concurrency_limit == 1


def test_tiny_models_through_the_page(tiny_grounding_dino: Path, tiny_sam: Path, tiny_clip: str,
                                      shapes_path: Path):
    from ovperc.stages import ClipClassifier, GroundingDinoDetector, SamSegmenter

    pipeline = ovperc.Pipeline(
        detector=GroundingDinoDetector(str(tiny_grounding_dino), device="cpu",
                                       box_threshold=0.05, text_threshold=0.0),
        segmenter=SamSegmenter(str(tiny_sam), device="cpu"),
        classifier=ClipClassifier(tiny_clip, device="cpu"),
    )
    expected = pipeline(shapes_path, classes=SHAPES_CLASSES).to_dict()
    assert expected["detections"], "random tiny weights should give boxes at these thresholds"
    assert "mask" in expected["detections"][0] and "clip_class" in expected["detections"][0]
    client, _ = _client(pipeline)
    with client:
        status, _, _, table, result, *_ = _run(
            client, _upload(client, shapes_path.read_bytes(), "shapes.png"), SHAPES_CLASSES,
            box=0.05, text=0.0)
    assert status.startswith("**Found"), status
    assert result["detections"] == json.loads(json.dumps(expected["detections"]))
    assert len(table["data"]) == len(expected["detections"])
