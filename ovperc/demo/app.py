"""The Gradio page of the demo: layout, one ``run`` event, and the launcher.

What the page suggests (examples, the classes placeholder, a note on what toy models know)
follows the models the pipeline loads (:mod:`ovperc.demo.guide`). Requests from API
clients are checked before use (:mod:`ovperc.demo.api`): a malformed one gets a message,
not an empty error.

Requests are queued; ``concurrency_limit`` of them (default 1) run at a time, because the
models live on one device and two requests at once would only share it and double the
memory. Uploaded and result files are served by Gradio from its own cache only: no
``allowed_paths`` are added, so no other file on the server can be requested.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovperc.demo import api
from ovperc.demo.core import DemoInputError, DemoLimits, DemoResult, DemoRunner, RunOptions
from ovperc.demo.guide import DemoGuide, guide_for
from ovperc.demo.render import TABLE_HEADERS, annotate, detections_table, tag_scores
from ovperc.demo.video import VideoDemo, VideoLimits, add_video_tab

if TYPE_CHECKING:
    import gradio as gr

    from ovperc.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: Requests that run at the same time (the rest wait in the queue).
DEFAULT_CONCURRENCY_LIMIT = 1
#: Requests that may wait in the queue; more are turned away with a "queue full" message.
DEFAULT_QUEUE_SIZE = 32

INTRO = """\
# ovperc: find anything you can name

Upload a photo and type what to look for, separated by commas, or leave the box empty and
let the tagger name what it sees. Grounding DINO finds a box for every named object, SAM
turns each box into a mask, and CLIP checks every region against the classes: it can
re-score, re-label or reject boxes. Switch stages on and off and raise the thresholds to
see what each one does. The models run on this machine; nothing is sent elsewhere.
"""

#: The buttons of the image components: no "share" (it only works on Hugging Face Spaces).
IMAGE_BUTTONS = ["download", "fullscreen"]


def _import_gradio() -> Any:
    """Import Gradio with its usage analytics off (the variable is read at import)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "the demo needs Gradio: pip install 'ovperc[demo]'") from error
    return gradio


def _example_rows(examples: Sequence[Any] | None, default: str) -> list[list[str]]:
    """``[path, classes]`` rows from paths (with ``default``) or ``(path, classes)`` pairs."""
    rows = []
    for item in examples or ():
        if isinstance(item, (str, os.PathLike)):
            rows.append([str(item), default])
        else:
            path, classes = item
            rows.append([str(path), str(classes)])
    return rows


def build_app(
    pipeline: Pipeline,
    *,
    examples: Sequence[str | os.PathLike | tuple[str | os.PathLike, str]] | None = None,
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    limits: DemoLimits | None = None,
    workdir: str | os.PathLike | None = None,
    guide: DemoGuide | None = None,
    video_limits: VideoLimits | None = None,
) -> gr.Blocks:
    """Build the demo page for a pipeline; its models load once and serve every request.

    Args:
        pipeline: the stages to offer. Switches appear for the stages it has.
        examples: example images, as paths (suggested with the guide's classes) or
            ``(path, classes)`` pairs; :func:`example_images` gives the guide's own.
        concurrency_limit: requests that run at the same time; others wait in the queue.
        queue_size: requests that may wait; more get a "queue is full" message.
        limits: what uploads and prompts may be (see :class:`~ovperc.demo.DemoLimits`).
        workdir: folder for result files; by default a new temporary folder, removed
            when the app is garbage-collected or the process exits. In a folder you give,
            only the result files the demo wrote are ever removed.
        guide: what the page suggests and says the models know; by default chosen from
            the pipeline's models (:func:`~ovperc.demo.guide.guide_for`).
        video_limits: what the Video tab accepts (:class:`~ovperc.demo.video.VideoLimits`);
            the tab is there when the pipeline has a detector and a segmenter.

    Returns:
        The ``gradio.Blocks`` app (queue configured), ready for ``launch()`` or
        ``gradio.mount_gradio_app``.

    Raises:
        ValueError: the pipeline has neither a detector nor a tagger, or a limit is < 1.

    Example:
        >>> app = build_app(ovperc.Pipeline.from_preset("default"))  # doctest: +SKIP
        >>> app.launch(server_name="127.0.0.1", server_port=7860)  # doctest: +SKIP
    """
    if concurrency_limit < 1 or queue_size < 1:
        raise ValueError(f"concurrency_limit and queue_size must be >= 1, got "
                         f"{concurrency_limit} and {queue_size}")
    gr = _import_gradio()
    owned = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="ovperc-demo-")) if owned else Path(workdir)
    guide = guide or guide_for(pipeline)
    runner = DemoRunner(pipeline, workdir=folder, limits=limits, guide=guide, owns_workdir=owned)
    video = VideoDemo(runner, video_limits)

    with api.demo_blocks(gr)(title="ovperc demo", analytics_enabled=False) as app:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Image", id="image-tab", elem_id="image-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"],
                                         elem_id="input-image", height=340, buttons=["fullscreen"])
                        classes = gr.Textbox(
                            label="Classes", lines=2, elem_id="classes",
                            placeholder=guide.placeholder, info=_classes_info(runner))
                        gr.Markdown(f"**{guide.note}**" if guide.note else "", elem_id="models-note",
                                    visible=bool(guide.note))
                        with gr.Accordion("Stages and thresholds", open=True):
                            with gr.Row():
                                tagging = gr.Checkbox(label="Tagging", value=True, elem_id="tagging",
                                                      visible=runner.has_tagger)
                                detect_tags = gr.Checkbox(
                                    label="Also detect the tags", value=False, elem_id="detect-tags",
                                    visible=runner.has_tagger and runner.has_detector)
                                segment = gr.Checkbox(label="Segmentation (SAM)", value=True,
                                                      elem_id="segment", visible=runner.has_segmenter)
                                classify = gr.Checkbox(label="CLIP classification", value=True,
                                                       elem_id="classify", visible=runner.has_classifier)
                            clip_mode = gr.Radio(
                                choices=list(runner.clip_modes), value=runner.clip_mode,
                                label="CLIP mode", elem_id="clip-mode",
                                info="rescore: fuse CLIP's score into the box score; relabel: take "
                                     "CLIP's class; reject: drop boxes CLIP does not recognise",
                                visible=runner.has_classifier and bool(runner.clip_modes))
                            box_threshold = gr.Slider(
                                minimum=runner.box_threshold, maximum=1.0, step=0.01,
                                value=runner.box_threshold, label="Box threshold",
                                info="keep boxes whose detector score is at least this",
                                elem_id="box-threshold", visible=runner.has_detector)
                            text_threshold = gr.Slider(
                                minimum=runner.text_threshold or 0.0, maximum=1.0, step=0.01,
                                value=runner.text_threshold or 0.0, label="Text threshold",
                                info="keep boxes whose class words score at least this",
                                elem_id="text-threshold", visible=runner.text_threshold is not None)
                        run = gr.Button("Run", variant="primary", elem_id="run")
                        rows = _example_rows(examples, guide.example_classes)
                        if rows:
                            gr.Examples(examples=rows, inputs=[image, classes], label="Examples")
                    with gr.Column(scale=6):
                        status = gr.Markdown("Results appear here.", elem_id="status")
                        annotated = gr.Image(label="Result", type="numpy", interactive=False,
                                             elem_id="annotated", height=400, format="png",
                                             buttons=IMAGE_BUTTONS)
                        tags = gr.Label(label="Tags", num_top_classes=10, elem_id="tags",
                                        visible=runner.has_tagger)
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections", interactive=False,
                                     elem_id="detections", wrap=True)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        result_json = gr.JSON(label="Result (Perception.to_dict())", open=True,
                                              elem_id="result-json", max_height=420)
                    with gr.Column(scale=1, min_width=200):
                        json_file = gr.DownloadButton("Download JSON", interactive=False,
                                                      elem_id="download-json")
                        mask_file = gr.DownloadButton(
                            "Download mask PNG", interactive=False, elem_id="download-mask",
                            visible=runner.has_segmenter)
                        gr.Markdown("The mask PNG holds instance ids: pixel value *k* is row *k* "
                                    "of the table, 0 is background.", visible=runner.has_segmenter)
            if video.available:
                add_video_tab(gr, video, concurrency_limit=concurrency_limit,
                              placeholder=guide.placeholder)

        def on_run(upload: Any, text: Any, use_tagger: Any, merge: Any, use_sam: Any,
                   use_clip: Any, mode: Any, box: Any, text_min: Any) -> tuple:
            try:
                path, name = _upload_path(upload)
                options = RunOptions(
                    classes=api.text(text, "classes"),
                    tagging=api.flag(use_tagger, "tagging", True),
                    detect_tags=api.flag(merge, "detect_tags", False),
                    segment=api.flag(use_sam, "segment", True),
                    classify=api.flag(use_clip, "classify", True),
                    clip_mode=api.text(mode, "clip_mode") or None,
                    box_threshold=_above(api.number(box, "box_threshold"), runner.box_threshold),
                    text_threshold=_above(api.number(text_min, "text_threshold"),
                                          runner.text_threshold))
            except api.RequestError as error:
                raise api.refuse(gr, str(error)) from None
            try:
                result = runner.run(path, options, name=name)
            except DemoInputError as error:
                gr.Warning(str(error))
                return _failure(gr, f"**Cannot run:** {error}")
            except Exception as error:  # the page must explain, never hang
                logger.exception("demo request failed")
                message = (f"**Something went wrong while running the models** "
                           f"({type(error).__name__}: {error}). The server log has the details.")
                gr.Warning(message)
                return _failure(gr, message)
            return _success(gr, result, guide)

        run.click(
            on_run,
            inputs=[image, classes, tagging, detect_tags, segment, classify, clip_mode,
                    box_threshold, text_threshold],
            outputs=[status, annotated, tags, table, result_json, json_file, mask_file],
            api_name="run",
            # the upload reaches on_run as Gradio's file record, so a file that is not an
            # image gets the demo's own message instead of a decoding error
            preprocess=False,
            concurrency_limit=concurrency_limit,
        )

    app.queue(default_concurrency_limit=concurrency_limit, max_size=queue_size)
    app.ovperc_runner = runner  # for tests and embedding: the runner behind the page
    app.ovperc_video = video
    app.ovperc_guide = guide
    if owned:
        weakref.finalize(app, shutil.rmtree, str(folder), True)
    return app


def _classes_info(runner: DemoRunner) -> str:
    if not runner.has_detector:
        return "this demo only tags images; classes are not used"
    if runner.has_tagger:
        return "separated by commas; leave empty to detect what the tagger names"
    return "separated by commas"


def _above(value: Any, floor: float | None) -> float | None:
    """A slider value as a request threshold; ``None`` when it adds nothing to the floor."""
    if floor is None or value is None:
        return None
    value = float(value)
    return value if value > floor else None


def _upload_path(upload: Any) -> tuple[str | None, str | None]:
    """The server path and the user's file name of Gradio's upload record (checked again
    here: the page calls ``on_run`` only through Gradio, but the check is cheap)."""
    from gradio.utils import get_upload_folder

    return api.check_upload(upload, get_upload_folder())


def _empty_table() -> Any:
    import pandas as pd

    return pd.DataFrame([], columns=TABLE_HEADERS)


def _failure(gr: Any, message: str) -> tuple:
    return (message, None, None, _empty_table(), None,
            gr.DownloadButton(value=None, interactive=False),
            gr.DownloadButton(value=None, interactive=False))


def _success(gr: Any, result: DemoResult, guide: DemoGuide) -> tuple:
    import pandas as pd

    perception = result.perception
    count = len(perception.detections)
    classes = len(set(perception.class_names))
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in perception.timings.items())
    lines = [f"**Found {count} object{'s' * (count != 1)} of {classes} "
             f"class{'es' * (classes != 1)}** in {result.seconds:.2f} s"
             + (f" ({timings})" if timings else "") + "."]
    lines.extend(text for text in (result.note, result.hint) if text)
    rows = pd.DataFrame(detections_table(perception), columns=TABLE_HEADERS)
    mask = result.mask_path
    image = annotate(perception, reserved=guide.known_classes)
    return ("\n\n".join(lines), image, tag_scores(perception) or None, rows,
            result.to_dict(),
            gr.DownloadButton(value=str(result.json_path), interactive=True),
            gr.DownloadButton(value=str(mask) if mask else None, interactive=mask is not None))


def launch(
    pipeline: Pipeline,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    examples: Sequence[Any] | None = None,
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT,
    limits: DemoLimits | None = None,
    guide: DemoGuide | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build the demo and serve it.

    Args:
        pipeline: the stages to offer.
        host: interface to listen on (``127.0.0.1``: this machine only; ``0.0.0.0``: all).
        port: TCP port.
        share: also open a public Gradio share link (off by default).
        examples: example images (see :func:`build_app`).
        concurrency_limit: requests that run at the same time.
        limits: upload and prompt limits.
        guide: what the page suggests (see :func:`build_app`).
        block: wait until the server stops (``False`` returns at once).

    Returns:
        The running app.

    Example:
        >>> launch(ovperc.Pipeline.from_preset("default"), port=7861)  # doctest: +SKIP
    """
    limits = limits or DemoLimits()
    app = build_app(pipeline, examples=examples, concurrency_limit=concurrency_limit,
                    limits=limits, guide=guide)
    app.launch(server_name=host, server_port=port, share=share, show_error=False,
               max_file_size=f"{limits.max_file_mb}mb", prevent_thread_lock=not block,
               quiet=not block)
    return app


def example_images(guide: DemoGuide, folder: str | os.PathLike | None = None
                   ) -> list[tuple[Path, str]]:
    """Draw a guide's example images, for :func:`build_app`'s ``examples``.

    Args:
        guide: the guide (see :func:`~ovperc.demo.guide.guide_for`).
        folder: where to write them; by default a new temporary folder.

    Returns:
        ``(path, suggested classes)`` pairs.

    Example:
        >>> pipeline = Pipeline.from_preset("shapes-tiny")  # doctest: +SKIP
        >>> build_app(pipeline, examples=example_images(guide_for(pipeline)))  # doctest: +SKIP
    """
    target = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="ovperc-examples-"))
    return guide.write_examples(target)
