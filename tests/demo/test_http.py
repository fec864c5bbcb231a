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


def _components(client: TestClient) -> dict[str, dict[str, Any]]:
    """The page's components by elem_id, as the browser receives them."""
    config = client.get("/config").json()
    return {c["props"]["elem_id"]: c for c in config["components"] if c["props"].get("elem_id")}


def test_images_have_no_share_button(served):
    client, _, _ = served
    images = [c for c in _components(client).values() if c["type"] == "image"]
    assert {c["props"]["elem_id"] for c in images} == {"input-image", "annotated"}
    for image in images:
        assert "share" not in image["props"]["buttons"], image["props"]["buttons"]
    assert _components(client)["annotated"]["props"]["buttons"] == ["download", "fullscreen"]


def test_open_vocabulary_models_get_everyday_suggestions(served):
    client, _, _ = served
    components = _components(client)
    assert components["classes"]["props"]["placeholder"] == "person, bicycle, traffic light"
    assert components["models-note"]["props"]["visible"] is False


def test_shapes_tiny_models_get_shapes_examples_and_a_note(tmp_path: Path):
    from ovperc.demo import example_images

    pipeline = ovperc.Pipeline.from_preset("shapes-tiny", device="cpu")  # not loaded: not needed
    app = build_app(pipeline, examples=example_images(build_app(pipeline).ovperc_guide, tmp_path))
    four = "red circle, blue square, green triangle, yellow star"
    server = gr.mount_gradio_app(FastAPI(), app, path="")
    with TestClient(server) as client:
        components = _components(client)
        config = client.get("/config").json()
    assert components["classes"]["props"]["placeholder"] == four
    note = components["models-note"]["props"]
    assert note["visible"] is True and f"These toy models know only: {four}." in note["value"]
    [dataset] = [c for c in config["components"] if c["type"] == "dataset"]
    samples = dataset["props"]["samples"]
    assert [s[0]["orig_name"] for s in samples] == [f"shapes_00{i}.png" for i in range(4)]
    assert {s[1] for s in samples} == {four}


def test_tiny_image_and_nothing_found_are_explained(served, tmp_path: Path):
    from PIL import Image

    client, _, _ = served
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (214, 40, 40)).save(path)
    status, image, *_ = _run(client, _upload(client, path.read_bytes(), "dot.png"), "red square")
    assert status.startswith("**Cannot run:** dot.png is 1x1 pixels: too small") and image is None
    status, *_ = _run(client, _upload(client, _shapes_bytes(), "shapes.png"), "purple cow")
    assert status.startswith("**Found 0 objects of 0 classes**")
    assert "Nothing found. Try:\n- a lower box threshold" in status
    assert "- other class names: short, concrete nouns" in status
    status, *_ = _run(client, _upload(client, _shapes_bytes(), "shapes.png"), ", ,")
    assert status.startswith("**Cannot run:** The classes box holds ', ,', which names no class.")


def _shapes_bytes() -> bytes:
    import io

    from ovperc.demo.examples import draw_example

    buffer = io.BytesIO()
    draw_example("shapes.png").save(buffer, format="PNG")
    return buffer.getvalue()


def _raw_run(client: TestClient, data: list[Any]) -> Any:
    return client.post("/gradio_api/run/run", json={"data": data})


REST = ["red square", True, False, True, True, "rescore", 0.3, 0.25]


@pytest.mark.parametrize(("data", "message"), [
    ([{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, *REST],
     "The image '/etc/passwd' was not uploaded to this server; only uploads are read. To send an "
     "image, upload the file first (POST /gradio_api/upload)"),
    (["/etc/passwd", *REST], "The image must be null or a file record; got '/etc/passwd'."),
    ([{"path": "http://127.0.0.1:1/cat.png"}, *REST],
     "The image 'http://127.0.0.1:1/cat.png' is a URL; this demo fetches nothing."),
    ([None, "red"], "run takes 9 inputs (image, classes, tagging, detect_tags, segment, classify, "
                    "clip_mode, box_threshold, text_threshold); got 2."),
    ([None, "red", "false", False, True, True, "rescore", 0.3, 0.25],
     "tagging must be true or false; got 'false'."),
    ([None, "red", True, False, True, True, "rescore", 5, 0.25],
     "box_threshold must be a number from 0 to 1; got 5."),
    ([None, ["red"], True, False, True, True, "rescore", 0.3, 0.25],
     "classes must be a string; got ['red']."),
])
def test_bad_api_requests_get_a_message_and_one_log_line(
        served, data: list[Any], message: str, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture):
    client, _, _ = served
    caplog.set_level("WARNING")
    response = _raw_run(client, data)
    assert response.status_code == 500
    assert response.json()["error"].startswith(message), response.json()
    records = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert [r.name for r in records] == ["ovperc.demo.api"]
    assert records[0].getMessage().startswith("refused a demo API request: " + message)
    assert "Traceback" not in capfd.readouterr().err


def test_gradios_own_refusals_become_messages_too(served, caplog: pytest.LogCaptureFixture,
                                                  capfd: pytest.CaptureFixture):
    client, _, _ = served
    caplog.set_level("WARNING")
    upload = _upload(client, _shapes_bytes(), "shapes.png")
    upload["size"] = "large"  # a file record Gradio's own model refuses
    response = _raw_run(client, [upload, *REST])
    assert response.status_code == 500
    assert response.json()["error"].startswith(
        "The request's inputs were refused (ValidationError). To send an image, upload the file")
    [record] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "ValidationError" in record.getMessage() and "\n" not in record.getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_queue_clients_get_the_message(served):
    """What gradio_client uses: join the queue, then read the event stream."""
    client, _, _ = served
    response = client.post("/gradio_api/call/run",
                           json={"data": [{"path": "/etc/passwd"}, *REST]})
    assert response.status_code == 200, response.text
    stream = client.get(f"/gradio_api/call/run/{response.json()['event_id']}").text
    assert "event: error" in stream
    assert "was not uploaded to this server" in stream


def test_examples_from_a_folder_get_the_guides_classes(examples: list[tuple[Path, str]]):
    from ovperc.demo.guide import SHAPES_TINY

    (first, _), (second, _) = examples
    app = build_app(make_pipeline(), guide=SHAPES_TINY,
                    examples=[first, (second, "blue square"), first])
    with TestClient(gr.mount_gradio_app(FastAPI(), app, path="")) as client:
        [dataset] = [c for c in client.get("/config").json()["components"] if c["type"] == "dataset"]
    assert [s[1] for s in dataset["props"]["samples"]] == [
        SHAPES_TINY.example_classes, "blue square", SHAPES_TINY.example_classes]
