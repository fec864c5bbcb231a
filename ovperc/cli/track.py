"""``ovperc track``: follow every named object through a video, each under a stable id."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ovperc.cli.options import (
    add_class_options,
    add_model_options,
    add_threshold_options,
    build_pipeline,
    describe_error,
    iou_value,
    ontology_from_args,
    positive_int,
    run_resumable,
    run_signature,
)

EPILOG = """\
examples:
  ovperc track street.mp4 --classes "person, car" --out tracks/
  ovperc track street.mp4 --classes "person, car" --out tracks/ --video-segmenter sam2.1-tiny
  ovperc track frames/ --classes "dog" --out tracks/ --dataset-every 10 --format yolo
  ovperc track clip.mp4 --preset shapes-tiny --classes "red circle, blue square" --out tracks/

Writes to --out: annotated.mp4 (masks, boxes, "#id class"), tracks.txt (MOT challenge:
frame,id,x,y,w,h,conf,-1,-1,-1, frames from 1), tracks.json (COCO with track_id),
masks/<frame>.png (each pixel: the track id there, 0 none), dataset/ (with
--dataset-every), report.json.

Rerun the same command after an interruption (Ctrl-C, kill, crash) to resume: finished
chunks of --chunk-frames frames are kept, tracking starts again at the first unfinished
one with a fresh detection, so objects tracked across that frame get new ids there (ids
are never reused).
Exit code: 0 every frame tracked, 1 some frames could not be decoded or files were left
alone (see report.json), 2 error (bad options, unreadable video, models not available,
settings differ from the run in --out), 130 interrupted.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``track`` and its options."""
    from ovperc.labeling.writers import FORMATS

    parser = subparsers.add_parser(
        "track",
        help="track every named object through a video: annotated video, MOT/COCO tracks, masks",
        description="Detect the named objects on keyframes, follow each one's mask through every "
                    "frame with a video segmenter, and keep its id while it is tracked.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, metavar="VIDEO",
                        help="a video file (mp4, mkv, avi, mov, webm, ...: anything FFmpeg reads) or "
                             "a folder of frames (image files, in natural order)")
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                        help="folder to write (created; resumed if it holds an interrupted run with "
                             "the same settings)")
    add_class_options(parser)
    tracking = parser.add_argument_group("tracking")
    tracking.add_argument("--video-segmenter", metavar="MODEL",
                          help="what carries masks from frame to frame: a transformers video model "
                               "(sam2.1-tiny, edgetam, a hub id or folder). Default: the chain's "
                               "image segmenter, prompted on each frame with each object's last box")
    tracking.add_argument("--detect-every", type=positive_int, default=10, metavar="N",
                          help="run the detector on one frame in N; the video segmenter follows the "
                               "objects in between (default 10)")
    tracking.add_argument("--max-lost", type=positive_int, default=30, metavar="N",
                          help="end a track whose mask stays empty for N frames in a row (default 30)")
    tracking.add_argument("--new-track-iou", type=iou_value, default=0.3, metavar="IOU",
                          help="a detection overlapping no tracked object by this box IoU starts a "
                               "new track (default 0.3)")
    frames = parser.add_argument_group("frames")
    frames.add_argument("--stride", type=positive_int, default=1, metavar="N",
                        help="track every N-th frame of the video (default 1: all)")
    frames.add_argument("--start", type=_non_negative_int, default=0, metavar="I",
                        help="first frame to track (0-based; default 0)")
    frames.add_argument("--max-frames", type=positive_int, metavar="N", help="track at most N frames")
    frames.add_argument("--fps", type=_positive_float, metavar="F",
                        help="frame rate of annotated.mp4 (default: the video's divided by --stride; "
                             "10 for a folder of frames)")
    out = parser.add_argument_group("output")
    out.add_argument("--no-video", action="store_true", help="no annotated.mp4")
    out.add_argument("--no-masks", action="store_true", help="no masks/<frame>.png")
    out.add_argument("--dataset-every", type=positive_int, metavar="K",
                     help="also write every K-th tracked frame with its labels as a training dataset "
                          "in DIR/dataset (the layout `ovperc label` writes)")
    out.add_argument("--format", choices=FORMATS, default="yolo",
                     help="format of that dataset (default yolo; masks as polygons, COCO RLE, or VOC "
                          "instance PNGs)")
    out.add_argument("--chunk-frames", type=positive_int, default=100, metavar="N",
                     help="frames per resumable chunk (default 100)")
    out.add_argument("--overwrite", action="store_true",
                     help="discard a previous run in --out made with other settings; only the files "
                          "its manifest recorded are removed, never files ovperc did not write")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--gt", type=Path, metavar="FILE",
                     help="score the tracks against this MOT-challenge ground truth (frame,id,x,y,w,h,"
                          "...; frames from 1) on the frames tracked: MOTA, IDF1, id switches, printed "
                          'and saved in report.json (needs motmetrics: pip install "ovperc[track]")')
    add_model_options(parser, default_preset="detect+segment")
    add_threshold_options(parser, batching=False)
    parser.set_defaults(func=run_track)


def run_track(args: argparse.Namespace) -> int:
    """Run ``ovperc track``; returns the exit code."""
    from ovperc.hub import ModelNotAvailableError
    from ovperc.labeling.lock import check_unlocked
    from ovperc.video.output import DatasetOptions
    from ovperc.video.reader import probe_video
    from ovperc.video.run import check_outside, track_video
    from ovperc.video.tracker import Tracker

    try:  # every setting is checked before the first frame is decoded or a model loads
        ontology = ontology_from_args(args)
        info = probe_video(args.source)
        if info.kind == "stream":
            raise ValueError("ovperc track reads a video file or a folder of frames; track a camera or "
                             "stream in Python (ovperc.Tracker with ovperc.video.reader.read_frames)")
        check_outside(args.source, args.out)
        if args.out.exists():
            check_unlocked(args.out)
        pipeline = build_pipeline(args, preset=args.preset)
        if (ontology is None or args.tag_merge) and pipeline.tagger is None:
            raise ValueError("no --classes or --ontology given, or --tag-merge, and the chain has no "
                             "tagger: give classes, or a preset/--tagger that tags")
        if pipeline.class_thresholds is not None and ontology is not None:
            pipeline.class_thresholds.check_classes(ontology.classes)
        pipeline.check(ontology)
        tracker = Tracker(pipeline, args.video_segmenter, detect_every=args.detect_every,
                          max_lost=args.max_lost, new_track_iou=args.new_track_iou,
                          device=args.device, dtype=args.dtype)
        dataset = None if args.dataset_every is None else DatasetOptions(args.dataset_every, args.format)
        truth = None
        if args.gt is not None:
            import importlib.util

            from ovperc.video.metrics import read_mot

            if importlib.util.find_spec("motmetrics") is None:
                raise ImportError('--gt needs motmetrics to score the tracks: pip install "ovperc[track]"')
            if not args.gt.is_file():
                raise ValueError(f"--gt {args.gt}: file not found")
            truth = read_mot(args.gt)
    except (ValueError, OSError, ModelNotAvailableError, ImportError, TypeError) as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2
    signature = {**run_signature(args, preset=args.preset), "video_segmenter": args.video_segmenter,
                 "detect_every": args.detect_every, "max_lost": args.max_lost,
                 "new_track_iou": args.new_track_iou}
    report = run_resumable(lambda: track_video(
        tracker, args.source, args.out, classes=ontology, tag_merge=args.tag_merge,
        video=not args.no_video, masks=not args.no_masks, dataset=dataset,
        chunk_frames=args.chunk_frames, stride=args.stride, start=args.start,
        max_frames=args.max_frames, fps=args.fps, overwrite=args.overwrite,
        signature=signature, progress=not args.no_progress, truth=truth,
    ))
    if isinstance(report, int):
        return report
    print(report.summary())
    print(f"report: {Path(args.out) / 'report.json'}")
    return report.exit_code


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value
