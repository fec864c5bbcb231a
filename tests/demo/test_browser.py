"""The demo in a real headless Chromium (Debian's build), driven by Playwright.

Needs ``pip install playwright`` and ``apt-get install chromium``; skipped without them.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from ovperc.demo import build_app, example_images
from ovperc.demo.guide import SHAPES_TINY
from tests.demo.conftest import SHAPES_CLASSES, make_pipeline

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("OVPERC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _serve(app: object) -> str:
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               max_file_size="50mb")
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(examples: list[tuple[Path, str]]) -> Iterator[tuple[str, object]]:
    pipeline = make_pipeline()
    app = build_app(pipeline, examples=examples)
    yield _serve(app), pipeline
    app.close()


@pytest.fixture(scope="module")
def shapes_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page as the shapes-tiny models get it (colour-seeing fakes run the requests)."""
    app = build_app(make_pipeline(), guide=SHAPES_TINY,
                    examples=example_images(SHAPES_TINY, tmp_path_factory.mktemp("shapes")))
    yield _serve(app)
    app.close()


def _open(browser: object, url: str) -> object:
    """A page that records every request and console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.requests, page.console_errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto(url)
    page.locator("#run").wait_for()
    return page


@pytest.fixture
def page(chromium_browser: object, server: tuple[str, object]) -> Iterator[object]:
    page = _open(chromium_browser, server[0])
    yield page
    page.context.close()


@pytest.fixture
def shapes_page(chromium_browser: object, shapes_server: str) -> Iterator[object]:
    page = _open(chromium_browser, shapes_server)
    yield page
    page.context.close()


def _upload(page: object, path: Path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.locator("#input-image img").first.wait_for()


def _only_local(urls: list[str]) -> list[str]:
    return [u for u in urls if urlparse(u).scheme not in ("data", "blob")
            and urlparse(u).hostname != "127.0.0.1"]


def test_upload_type_run_shows_the_pipelines_detections(
        page: object, server: tuple[str, object], shapes_path: Path, tmp_path: Path):
    _, pipeline = server
    expected = pipeline(shapes_path, classes=SHAPES_CLASSES).to_dict()["detections"]
    assert len(expected) == 3

    _upload(page, shapes_path)
    page.locator("#classes textarea").fill(SHAPES_CLASSES)
    page.locator("#run").click()
    page.locator("#status", has_text="Found 3 objects").wait_for(timeout=30_000)

    # the table: one row per detection: number, class, score, CLIP class and score, box
    rows = page.locator("#detections div[role=row]")
    assert rows.count() == len(expected)
    for i, det in enumerate(expected):
        cells = [c.strip() for c in rows.nth(i).inner_text().split("\n") if c.strip()]
        want = [str(i + 1), det["class_name"], f"{round(det['confidence'], 3):g}",
                det["clip_class"], f"{det['clip_score']:.3f}",
                *(f"{round(v, 1):g}" for v in det["box"])]
        assert cells == want

    # the JSON view shows the same detections
    shown = re.sub(r"\s+", "", page.locator("#result-json").text_content())
    for det in expected:
        box = ",".join(f"{v:g}" for v in det["box"])
        assert f'"box":[{box}]' in shown
        assert f'"class_name":"{det["class_name"]}"'.replace(" ", "") in shown

    # the downloaded JSON is exactly the pipeline's result; the mask PNG has one id per box
    with page.expect_download() as info:
        page.locator("#download-json").click()
    saved = json.loads(Path(info.value.path()).read_text())
    assert saved["detections"] == json.loads(json.dumps(expected))
    with page.expect_download() as info:
        page.locator("#download-mask").click()
    mask = np.asarray(Image.open(info.value.path()))
    assert mask.shape == (240, 320) and sorted(np.unique(mask)) == [0, 1, 2, 3]

    # the result image offers download and full screen, not Share (it fails off Spaces)
    page.locator("#annotated img").first.wait_for()
    assert _button_labels(page, "#annotated") == ["Fullscreen", "Download"]
    assert "Share" not in _button_labels(page, "#input-image")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)

    assert _only_local(page.requests) == []
    assert page.console_errors == []


def _button_labels(page: object, selector: str) -> list[str]:
    return [label for label in page.locator(f"{selector} button").evaluate_all(
        "buttons => buttons.map(b => b.getAttribute('aria-label'))") if label]


def test_non_image_upload_shows_a_message(page: object, tmp_path: Path):
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not pixels")
    page.locator("#input-image input[type=file]").set_input_files(str(fake))
    page.locator("#classes textarea").fill("red square")
    page.locator("#run").click()
    status = page.locator("#status", has_text="Cannot run")
    status.wait_for(timeout=30_000)
    assert "notes.png cannot be used: not an image" in status.inner_text()
    assert "Traceback" not in page.locator("body").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "demo-bad-upload.png"))
    assert _only_local(page.requests) == []


def test_example_then_empty_prompt_uses_the_tags(page: object):
    page.get_by_text(SHAPES_CLASSES, exact=True).click()  # the first example's row
    page.locator("#input-image img").first.wait_for()
    assert page.locator("#classes textarea").input_value() == SHAPES_CLASSES
    page.locator("#classes textarea").fill("")
    page.locator("#run").click()
    page.locator("#status", has_text="Found").wait_for(timeout=30_000)
    assert "blue circle" in page.locator("#tags").inner_text()
    assert "blue circle" in page.locator("#detections").inner_text()
    assert ("No classes given, so the detector looked for what the tagger named"
            in page.locator("#status").inner_text())


def test_toy_models_page_suggests_what_they_know(shapes_page: object):
    page = shapes_page
    four = "red circle, blue square, green triangle, yellow star"
    classes = page.locator("#classes textarea")
    assert classes.get_attribute("placeholder") == four
    assert f"These toy models know only: {four}." in page.locator("#models-note").inner_text()

    # the tester's first try: classes the toy models do not know
    page.get_by_text(four, exact=True).first.click()  # the first example row
    page.locator("#input-image img").first.wait_for()
    assert classes.input_value() == four
    classes.fill("house, tree, sun")
    page.locator("#run").click()
    status = page.locator("#status", has_text="Found 0 objects")
    status.wait_for(timeout=30_000)
    text = status.inner_text()
    assert "“house”, “tree”, “sun” are not among the classes these toy models know" in text
    assert "Nothing found. Try:" in text and "a lower box threshold" in text

    classes.fill(four)
    page.locator("#run").click()
    # the colour-seeing fakes find the first scene's blue square
    page.locator("#status", has_text="Found 1 object of 1 class").wait_for(timeout=30_000)
    assert "Nothing found" not in page.locator("#status").inner_text()
    assert "blue square" in page.locator("#detections").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-shapes-tiny.png"), full_page=True)
    assert _only_local(page.requests) == []
    assert page.console_errors == []


def test_tiny_image_is_refused_on_the_page(page: object, tmp_path: Path):
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (214, 40, 40)).save(dot)
    _upload(page, dot)
    page.locator("#classes textarea").fill("red square")
    page.locator("#run").click()
    status = page.locator("#status", has_text="Cannot run")
    status.wait_for(timeout=30_000)
    assert "dot.png is 1x1 pixels: too small to find anything in" in status.inner_text()
    assert page.locator("#detections div[role=row]").count() == 0
