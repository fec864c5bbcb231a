"""Video tracking cost: frames/s of ``ovperc.Tracker`` at real model sizes, and flat memory.

Builds random full-size models (real architectures, random weights cost the same time as
trained ones), saves them with ``save_pretrained`` and loads them through ovperc's public
path (``Sam2VideoSegmenter`` from a folder, ``GroundingDinoDetector`` from a folder):

- video trackers: SAM 2.1 hiera-tiny (``Sam2VideoConfig`` with the hiera-tiny backbone,
  39.0 M parameters like ``facebook/sam2.1-hiera-tiny``) and EdgeTAM (transformers'
  default ``EdgeTamVideoConfig``, RepViT-M1 backbone), both at their 1024 px input;
- detector: Grounding DINO swin-T (``bench/common.py``), 800/1333 input.

On a synthetic 640x480 clip (a smooth random image panning a few pixels per frame) it
measures:

1. the video tracker alone (``propagate``) with ``--objects`` objects started on the first
   frame: seconds per frame, and the process's RSS after ``--frames`` frames and after 10x
   as many (constant memory means the two match);
2. the whole tracker (``Tracker.track``: Grounding DINO on keyframes, then the video
   tracker) with detect-every 1 and 10: frames/s. The detector runs at full cost, but the
   boxes it answers are replaced by ``--objects`` fixed boxes, so both settings follow the
   same objects (random weights would give a random number of boxes).

    python bench/bench_track.py                       # both trackers, 3 objects
    python bench/bench_track.py --trackers sam2.1-tiny --frames 4 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import common
import numpy as np


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _build_tracker_model(kind: str, folder: Path) -> Path:
    """A random full-size video tracker saved with its processor (kept for later runs)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers as tf

    torch.manual_seed(0)
    size = {"height": 1024, "width": 1024}
    processor = tf.Sam2VideoProcessor(tf.Sam2ImageProcessor(size=size), tf.Sam2VideoVideoProcessor(size=size))
    if kind == "sam2.1-tiny":  # the hiera-tiny backbone of facebook/sam2.1-hiera-tiny
        hiera = tf.Sam2HieraDetConfig(
            hidden_size=96, num_attention_heads=1, blocks_per_stage=[1, 2, 7, 2],
            embed_dim_per_stage=[96, 192, 384, 768], num_attention_heads_per_stage=[1, 2, 4, 8],
            global_attention_blocks=[5, 7, 9], window_positional_embedding_background_size=[7, 7])
        vision = tf.Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=[768, 384, 192, 96])
        model = tf.Sam2VideoModel(tf.Sam2VideoConfig(vision_config=vision))
    elif kind == "edgetam":
        model = tf.EdgeTamVideoModel(tf.EdgeTamVideoConfig())
    else:
        raise ValueError(f"unknown tracker {kind!r}")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _clip(count: int, height: int, width: int) -> list[Any]:
    from ovperc.video.types import VideoFrame

    base = common.random_image(height + 64, width + 64)
    return [VideoFrame(i, np.ascontiguousarray(base[(i * 2) % 64:][:height, (i * 3) % 64:][:, :width]))
            for i in range(count)]


def _boxes(count: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    sizes = rng.uniform(0.15, 0.3, (count, 2)) * [width, height]
    corners = rng.uniform(0, 1, (count, 2)) * ([width, height] - sizes)
    return np.concatenate([corners, corners + sizes], axis=1)


class _FixedBoxes:
    """Runs a real detector (its full cost) but answers the same boxes on every frame."""

    def __init__(self, detector: Any, xyxy: np.ndarray) -> None:
        self.detector = detector
        self.xyxy = xyxy
        self.calls = 0

    def detect(self, images: Any, prompts: Any) -> list[Any]:
        import supervision as sv

        self.detector.detect(images, prompts)
        self.calls += 1
        out = []
        for image_prompts in prompts:
            det = sv.Detections(xyxy=self.xyxy.astype(np.float32), confidence=np.full(len(self.xyxy), 0.9),
                                class_id=np.zeros(len(self.xyxy), dtype=int))
            det.data["prompt"] = np.array([image_prompts[0]] * len(self.xyxy), dtype=object)
            out.append(det)
        return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", default="sam2.1-tiny,edgetam")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--frames", type=int, default=5, help="frames of the short run (the long one is 10x)")
    parser.add_argument("--track-frames", type=int, default=10, help="frames of each Tracker run")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-tracker", action="store_true", help="only the video trackers alone")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    import torch

    from ovperc import Pipeline, Tracker
    from ovperc.stages import GroundingDinoDetector
    from ovperc.video.sam2_video import Sam2VideoSegmenter

    common.setup_torch(args.threads)
    info = common.print_header("Video tracking: frames/s and memory over a long clip")
    root = common.models_root(args.models_dir)
    boxes = _boxes(args.objects, args.height, args.width)
    prompts = {i + 1: box for i, box in enumerate(boxes)}
    results: dict[str, Any] = {"machine": info, "objects": args.objects, "size": [args.width, args.height]}
    detector = None
    for kind in args.trackers.split(","):
        folder = _build_tracker_model(kind, root / f"{kind}-video")
        segmenter = Sam2VideoSegmenter(folder, device=args.device).load()
        params = sum(p.numel() for p in segmenter.model.parameters()) / 1e6
        short, long = args.frames, 10 * args.frames
        clip = _clip(long, args.height, args.width)
        with torch.inference_mode():
            segmenter.propagate(clip[0], prompts)  # start the objects (and warm up)
            rss, times, cpu, held = {}, [], [], 0
            for frame in clip[1:]:
                start, start_cpu = time.perf_counter(), time.process_time()
                segmenter.propagate(frame)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                print(f"  {kind} frame {frame.index}: {times[-1]:.2f} s, cpu {cpu[-1]:.2f} s, "
                      f"rss {_rss_mb():.1f} MB, frames held {segmenter.memory_frames()}", flush=True)
                held = max(held, segmenter.memory_frames())
                if frame.index + 1 in (short, long):
                    rss[frame.index + 1] = _rss_mb()
        row = {"params_m": round(params, 1), "window": segmenter.window,
               "s_per_frame_median": round(float(np.median(times)), 3),
               "cpu_s_per_frame_median": round(float(np.median(cpu)), 3),
               "s_per_frame_first_10": round(float(np.mean(times[:10])), 3),
               "s_per_frame_last_10": round(float(np.mean(times[-10:])), 3),
               "rss_mb": {str(k): round(v, 1) for k, v in rss.items()},
               "rss_growth": round(rss[long] / rss[short] - 1, 4), "max_frames_held": held}
        print(f"{kind}: {row}", flush=True)
        results[kind] = row
        segmenter.reset()
        if args.skip_tracker:
            continue
        if detector is None:
            folder = common.build_grounding_dino(root / "gdino-swin-t")
            gdino = GroundingDinoDetector(str(folder), device=args.device).load()
            detector = _FixedBoxes(gdino, boxes)
        pipe = Pipeline(detector=detector)
        clip = clip[:args.track_frames]
        for every in (1, 10):
            tracker = Tracker(pipe, segmenter, detect_every=every)
            detector.calls = 0
            start, start_cpu = time.perf_counter(), time.process_time()
            tracked = list(tracker.track(clip, ["person"]))
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
            stats = {"frames": len(tracked), "detector_calls": detector.calls, "seconds": round(seconds, 1),
                     "cpu_seconds": round(cpu_seconds, 1), "frames_per_s": round(len(tracked) / seconds, 3),
                     "frames_per_cpu_s": round(len(tracked) / cpu_seconds, 3),
                     "objects_last_frame": len(tracked[-1].detections)}
            print(f"{kind} detect-every {every}: {stats}", flush=True)
            results[f"{kind} detect-every {every}"] = stats
    results["uptime"] = os.getloadavg()
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
